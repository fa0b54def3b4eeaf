"""`dg-lsp doctor`: print device, model, kernel availability, and time a test infill.

Goes through the same `EngineBackend` the server uses, so what works here works in the editor.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
import time

from dg_lsp.backend import EngineBackend
from dg_lsp.engine.request import InfillRequest, SamplerConfig

PREFIX = "def fibonacci(n):\n    "
SUFFIX = "\n\n\nprint(fibonacci(10))\n"


def _line(label: str, value: str) -> None:
    print(f"  {label:<12} {value}", flush=True)


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run(args) -> int:
    from dg_lsp.server import __version__

    print("dg-lsp doctor")
    _line("dg-lsp", __version__)
    _line("python", f"{platform.python_version()} ({platform.system()} {platform.machine()})")
    _line("torch", "installed" if _available("torch") else "MISSING (pip install torch)")
    _line("triton", "installed" if _available("triton") else "not installed (CPU uses the torch kernels)")

    from dg_lsp import engine
    model_dir = args.model or str(engine.default_model_dir())
    _line("model", model_dir)
    backend = EngineBackend(args.model, device=args.device, dtype=args.dtype, family=args.family,
                            quantize=args.quantize)
    last = [-1]

    def progress(message: str, done: int, total: int) -> None:
        if total and done * 10 // total != last[0]:
            last[0] = done * 10 // total
            print(f"  {'':<12} {message} {done}/{total}", flush=True)

    start = time.perf_counter()
    try:
        backend.load(progress)
    except Exception as exc:  # noqa: BLE001 - the doctor reports every failure as a diagnosis
        _line("load", f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    _line("load", f"ok in {time.perf_counter() - start:.2f} s")
    torch = sys.modules.get("torch")  # imported by the engine while loading
    if torch is not None:
        cuda = torch.cuda.is_available()
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else "-"
        _line("torch", f"{torch.__version__}; CUDA available: {'yes' if cuda else 'no'}; GPUs: {names}")
    info = backend.describe()
    for key in ("model", "family", "device", "dtype", "params", "kernels", "quantize"):
        _line(key, str(info.get(key, "?")))
        if key == "dtype" and info.get("dtype_reason"):
            _line("", f"why: {info['dtype_reason']}")
    if "weight_bytes" in info:
        _line("weights", f"{info['weight_bytes'] / 2**20:.1f} MiB in memory")

    request = InfillRequest.at_cursor(PREFIX, SUFFIX, 32)
    sampler = SamplerConfig()
    try:
        for label in ("infill cold", "infill warm"):
            start = time.perf_counter()
            result = backend.complete(request, sampler)
            elapsed = (time.perf_counter() - start) * 1000.0
            _line(label, f"{elapsed:.1f} ms ({result.steps} steps, canvas {result.canvas_tokens} tokens)")
    except Exception as exc:  # noqa: BLE001
        _line("infill", f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    _line("text", repr(result.text[:120]))
    info = backend.describe()
    if info.get("skipped"):
        _line("skipped", info["skipped"])
    for fallback in info.get("kernel_fallbacks", []):  # recorded as the test infill ran
        _line("fallback", fallback)
    print("ok")
    return 0
