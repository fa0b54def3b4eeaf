"""GPU benchmark of the Triton kernels against their torch references (not a test: tests never time).

    python -m bench.bench_kernels                  # from the repo root, all kernels, bf16
    python -m bench.bench_kernels --only epilogue --dtype fp16 --peak-gbps 3350

Every row times the fast path and kernels.naive with triton.testing.do_bench (median of CUDA-event
timings, L2 flushed between runs), counts the bytes a kernel must move at minimum (inputs read once,
outputs written once) and reports achieved GB/s against the device's peak memory bandwidth: these
kernels are memory-bound at the canvas sizes we run, so % of peak bandwidth is the roofline figure.
The `err` column is the relative RMS difference to the reference: a quick sanity check, not a test.
Shapes are those of the target models: Qwen2.5-Coder-0.5B (Open-dCoder), Qwen2.5-7B (Dream), LLaDA-8B,
DiffusionGemma (two attention layer kinds, head dims 256 and 512, scale 1.0; LM head softcapped at 30).
"""

from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

import torch


class Model(NamedTuple):
    name: str
    hidden: int
    attention: tuple[tuple[int, int, int], ...]  # one (q heads, kv heads, head dim) per kind of layer
    vocab: int
    unit_scale: bool = False  # q and k are RMS-normed: attention scale 1.0, not head_dim ** -0.5
    softcap: float | None = None  # final logit softcap of the LM head


MODELS = [
    Model("qwen2.5-0.5b", 896, ((14, 2, 64),), 151_936),
    Model("qwen2.5-7b", 3584, ((28, 4, 128),), 152_064),
    Model("llada-8b", 4096, ((32, 32, 128),), 126_464),
    Model("diffusiongemma", 2816, ((8, 2, 256), (16, 8, 512)), 262_144, unit_scale=True, softcap=30.0),
]
CANVAS = [16, 64, 256]
CONTEXT = [512, 2048, 4096]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# HBM peak in GB/s by device name, for drivers / torch builds that do not expose clock and bus width
KNOWN_PEAK_GBPS = {"H200": 4800, "H100 SXM": 3350, "H100 80GB HBM3": 3350, "H100 PCIe": 2000, "H100": 3350,
                   "A100-SXM4-80GB": 2039, "A100": 1555, "L40S": 864, "RTX 4090": 1008}


def peak_gbps(override: float | None) -> float:
    if override:
        return override
    props = torch.cuda.get_device_properties(0)
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:  # double data rate: two transfers per clock
        return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9
    for key, gbps in KNOWN_PEAK_GBPS.items():
        if key in props.name:
            return gbps
    raise SystemExit(f"unknown peak bandwidth for {props.name}: pass --peak-gbps")


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def cases(dtype: torch.dtype, only: set[str], dev: str = "cuda"):
    """Yield (kernel, shape label, fast thunk, naive thunk, min bytes moved, compare(fast_out, naive_out))."""
    from dg_lsp.kernels import naive
    from dg_lsp.kernels.attention import canvas_attention
    from dg_lsp.kernels.epilogue import lm_head_epilogue
    from dg_lsp.kernels.rmsnorm import rms_norm
    from dg_lsp.kernels.rope import rope

    es = torch.tensor([], dtype=dtype).element_size()
    randn = lambda *s: torch.randn(*s, device=dev, dtype=dtype)  # noqa: E731
    for name, d, layers, vocab, unit_scale, softcap in MODELS:
        for c in CANVAS:
            if "rmsnorm" in only:
                x, r, w = randn(c, d), randn(c, d), randn(d)
                yield ("rms_norm", f"{name} rows={c}", lambda: rms_norm(x, w, 1e-6, r),
                       lambda: naive.rms_norm(x, w, 1e-6, r), (4 * c * d + d) * es, lambda f, n: rel_rms(f[0], n[0]))
            for hq, hkv, hd in layers:
                kind = f" {hq}/{hkv}x{hd}" if len(layers) > 1 else ""  # which layer kind, where there are two
                if "rope" in only:
                    q = randn(1, c, hq, hd).transpose(1, 2)  # projection layout viewed as [B, H, T, D]
                    cos, sin = randn(c, hd), randn(c, hd)
                    yield ("rope", f"{name}{kind} q T={c}", lambda: rope(q, cos, sin),
                           lambda: naive.rope(q, cos, sin), (2 * q.numel() + 2 * cos.numel()) * es, rel_rms)
                if "attention" in only:
                    scale = 1.0 if unit_scale else hd**-0.5  # randn q, k already have RMS ~1, as normed ones do
                    for ctx in CONTEXT:
                        q = randn(1, hq, c, hd)
                        kx, vx = randn(1, hkv, ctx, hd), randn(1, hkv, ctx, hd)
                        kc, vc = randn(1, hkv, c, hd), randn(1, hkv, c, hd)
                        n = torch.tensor(ctx, device=dev)
                        yield ("canvas_attention", f"{name}{kind} C={c} ctx={ctx}",
                               lambda: canvas_attention(q, kx, vx, kc, vc, scale, n),
                               lambda: naive.canvas_attention(q, kx, vx, kc, vc, scale, ctx),
                               (2 * q.numel() + 2 * kx.numel() + 2 * kc.numel()) * es, rel_rms)
            if "epilogue" in only:
                h, w = randn(c, d), randn(vocab, d) * d**-0.5
                yield ("lm_head_epilogue", f"{name} R={c} V={vocab}" + (f" softcap={softcap:g}" if softcap else ""),
                       lambda: lm_head_epilogue(h, w, temperature=0.7, softcap=softcap, seed=1),
                       lambda: naive.lm_head_epilogue(h, w, temperature=0.7, softcap=softcap, seed=1),
                       (vocab * d + c * d) * es, lambda f, n: rel_rms(f.entropy, n.entropy))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Time the Triton kernels against kernels.naive on a CUDA GPU.")
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--only", nargs="*", default=["rmsnorm", "rope", "attention", "epilogue"],
                   choices=["rmsnorm", "rope", "attention", "epilogue"])
    p.add_argument("--peak-gbps", type=float, default=None, help="device memory bandwidth, if not detected")
    p.add_argument("--rep", type=int, default=100, help="do_bench repetition budget in ms")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_kernels: needs a CUDA GPU (torch.cuda.is_available() is False). "
                         "The kernel tests run without one: python -m pytest tests/kernels")
    from dg_lsp.kernels import triton_available

    if not triton_available():
        raise SystemExit("bench_kernels: triton is not installed")
    from triton.testing import do_bench

    peak = peak_gbps(args.peak_gbps)
    props = torch.cuda.get_device_properties(0)
    print(f"## {props.name}, {props.multi_processor_count} SMs, peak {peak:.0f} GB/s, {args.dtype}, "
          f"torch {torch.__version__}\n")
    print("| kernel | shape | triton µs | naive µs | speedup | GB/s | % peak BW | err |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kernel, label, fast, ref, nbytes, compare in cases(DTYPES[args.dtype], set(args.only)):
        err = compare(fast(), ref())  # also compiles / warms up
        t_fast = do_bench(fast, rep=args.rep) * 1e-3  # do_bench returns ms
        t_ref = do_bench(ref, rep=args.rep) * 1e-3
        gbps = nbytes / t_fast / 1e9
        print(f"| {kernel} | {label} | {t_fast * 1e6:.1f} | {t_ref * 1e6:.1f} | {t_ref / t_fast:.1f}x "
              f"| {gbps:.0f} | {100 * gbps / peak:.0f}% | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
