"""Matmul ceiling of this CPU: median GFLOP/s of torch.matmul in fp32 and bf16 at the training shapes (tokens x
hidden x out) and a large square one: what bench_train's GFLOP/s should be read against.

    python bench/matmul_peak.py [--threads 2] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

SHAPES = [(4096, 256, 640), (4096, 640, 256), (4096, 256, 8192), (4096, 512, 1536), (2048, 2048, 2048)]


def gflops(m: int, k: int, n: int, dtype: torch.dtype, repeat: int) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):  # warm-up: allocator and the backend's kernel choice
        a @ b
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * m * k * n / statistics.median(times) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} threads", file=sys.stderr)
    for m, k, n in SHAPES:
        fp32, bf16 = (gflops(m, k, n, dt, args.repeat) for dt in (torch.float32, torch.bfloat16))
        print(f"{m}x{k}x{n}: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s, ratio {bf16 / fp32:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
