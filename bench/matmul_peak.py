"""Matmul ceiling of this CPU: median GFLOP/s of torch.matmul in fp32 and bf16 at the training shapes (tokens x
hidden x out) and a large square one: what bench_train's GFLOP/s should be read against.

    python bench/matmul_peak.py
"""
import time, torch
torch.set_num_threads(2)
shapes = [(4096, 256, 640), (4096, 640, 256), (4096, 256, 8192), (4096, 512, 1536), (2048, 2048, 2048)]
for m, k, n in shapes:
    row = []
    for dt in (torch.float32, torch.bfloat16):
        a, b = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
        for _ in range(3): a @ b
        times = []
        for _ in range(7):
            t0 = time.perf_counter(); a @ b; times.append(time.perf_counter() - t0)
        times.sort()
        row.append(2 * m * k * n / times[3] / 1e9)
    print(f"{m}x{k}x{n}: fp32 {row[0]:.0f} GFLOP/s, bf16 {row[1]:.0f} GFLOP/s, ratio {row[1]/row[0]:.2f}")
