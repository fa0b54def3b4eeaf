"""Where the model runs and in which dtype, decided once at load time from what the hardware can do.

GPUs compute in bf16. On a CPU the answer depends on the chip: with native bf16 matrix instructions
(AVX512-BF16, AMX) torch's bf16 matmuls run several times faster than fp32 at a model's real shapes
(measured on our development CPUs: 2-6x at 16 rows x 896..1536 hidden, 5x for a 0.5B model's LM head);
without them bf16 is emulated and far slower. Even with them, tiny shapes (a 256-wide model) gain
nothing. So: no native bf16 -> fp32; native bf16 -> time one bf16 and one fp32 matmul at the model's own
shape and keep bf16 only where it is clearly faster. The user can force either (`dtype`).
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dg_lsp.engine.config import ModelConfig
from dg_lsp.engine.errors import ConfigError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64}

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of native bf16 dot-product instructions
MIN_BF16_HIDDEN = 512  # below this width bf16 matmuls are no faster (16x256x640 measured even)
MIN_BF16_SPEEDUP = 1.2  # keep fp32 unless bf16 is clearly faster: it costs precision


@dataclass(frozen=True)
class DtypeChoice:
    dtype: torch.dtype
    reason: str  # one line for `doctor` and the logs


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device={device!r} is not a device: expected auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}, but CUDA is not available here: expected cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={device!r} is not supported: expected auto, cpu, cuda or cuda:N")
    return dev


def choose_dtype(dtype: str | torch.dtype | None, device: torch.device, cfg: ModelConfig | None = None) -> DtypeChoice:
    """The compute dtype: the user's if given, else the fastest sound one for this device and model."""
    if isinstance(dtype, torch.dtype):
        return DtypeChoice(dtype, "given")
    if dtype not in (None, "", "auto"):
        if dtype not in DTYPES:
            raise ConfigError(f"dtype={dtype!r} is not supported: expected auto, float32, bfloat16 or float16")
        return DtypeChoice(DTYPES[dtype], "set by the dtype option")
    if device.type == "cuda":
        return DtypeChoice(torch.bfloat16, "GPU: bf16 tensor cores")
    flags = cpu_bf16_flags()
    if not flags:
        return DtypeChoice(torch.float32, "CPU without native bf16 (no avx512_bf16/amx_bf16): bf16 would be emulated")
    if cfg is None:
        return DtypeChoice(torch.float32, f"CPU has {'+'.join(flags)}, but no model shape to measure at")
    if cfg.hidden_size < MIN_BF16_HIDDEN:
        return DtypeChoice(torch.float32, f"CPU has {'+'.join(flags)}, but hidden size {cfg.hidden_size} < "
                                          f"{MIN_BF16_HIDDEN}: bf16 is no faster at this size")
    fp32_ms, bf16_ms = measure_linear(16, cfg.hidden_size, cfg.intermediate_size)
    speedup = fp32_ms / bf16_ms
    measured = f"16x{cfg.hidden_size}x{cfg.intermediate_size} matmul: bf16 {bf16_ms:.2f} ms, fp32 {fp32_ms:.2f} ms"
    if speedup >= MIN_BF16_SPEEDUP:
        return DtypeChoice(torch.bfloat16, f"CPU has {'+'.join(flags)}; {measured} ({speedup:.1f}x)")
    return DtypeChoice(torch.float32, f"CPU has {'+'.join(flags)}, but {measured}: bf16 not faster here")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, cfg: ModelConfig | None = None) -> torch.dtype:
    return choose_dtype(dtype, device, cfg).dtype


@functools.cache
def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """The native bf16 instruction sets this CPU reports (Linux); () where it cannot be told."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            present = set(line.partition(":")[2].split())
            return tuple(f for f in BF16_FLAGS if f in present)
    return ()


@functools.cache
def measure_linear(rows: int, hidden: int, out: int, repeat: int = 5) -> tuple[float, float]:
    """Median ms of one [rows, hidden] x [out, hidden]^T matmul in fp32 and in bf16 (about 50 ms in all)."""
    times = []
    for dt in (torch.float32, torch.bfloat16):
        x, w = torch.randn(rows, hidden, dtype=dt), torch.randn(out, hidden, dtype=dt)
        torch.nn.functional.linear(x, w)  # warm-up: oneDNN picks its kernel on the first call
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            torch.nn.functional.linear(x, w)
            samples.append((time.perf_counter() - t0) * 1e3)
        times.append(statistics.median(samples))
    return times[0], times[1]
