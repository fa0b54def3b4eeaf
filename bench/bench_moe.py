"""MoE: `moe_grouped` (the fast path) against `moe_reference` (the loop over experts) at one shape.

    python -m bench.bench_moe --tokens 256 --experts 128 --top-k 8 --hidden 704 --width 176 --dtype bf16

Default shape: the released DiffusionGemma routing (128 experts, top-8, a 256-token canvas) at a quarter
of its width (hidden 704, expert width 176), so it runs in seconds on a development CPU. Prints the best
of --repeat runs of each (robust on a shared machine).
"""

from __future__ import annotations

import argparse
import time

import torch

from dg_lsp.engine.moe import moe_grouped, moe_reference, route

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def best_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=704)
    ap.add_argument("--width", type=int, default=176)
    ap.add_argument("--dtype", choices=DTYPES, default="bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    dt, dev, (n, e, h, i) = DTYPES[args.dtype], args.device, (args.tokens, args.experts, args.hidden, args.width)
    torch.manual_seed(0)
    x = torch.randn(n, h, device=dev).to(dt)
    gate_up = (torch.randn(e, 2 * i, h, device=dev) * h ** -0.5).to(dt)
    down = (torch.randn(e, h, i, device=dev) * i ** -0.5).to(dt)
    weights, index = route(x, torch.ones(h, device=dev, dtype=dt), torch.randn(e, h, device=dev).to(dt),
                           torch.ones(e, device=dev, dtype=dt), args.top_k, 1e-6)
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        for name, fn in (("reference", moe_reference), ("grouped", moe_grouped)):
            ms = best_ms(lambda: (fn(x, weights, index, gate_up, down), sync()), args.repeat)
            print(f"{name:9s} {args.dtype} N={n} E={e} k={args.top_k} H={h} I={i}: {ms:8.2f} ms")


if __name__ == "__main__":
    main()
