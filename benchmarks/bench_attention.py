"""Speed and memory of the NumPy attention, as ratios measured in one run.

1. Throughput, float32, C = 512, H = W = 65 (a 513-pixel crop at output stride 8), against a
   float32 GEMM of 2048 x 2048 x 2048 measured in the same run: the NumPy PAM (query blocks,
   deferred normalisation, the default of ``refimpl.position_attention``), the NumPy PAM with the
   whole N x N matrix (``return_attention=True``) and torch's explicit CPU PAM
   (``danet.PositionAttention(impl="explicit")``), all as GFLOP/s counted by :func:`pam_flops`;
   and the NumPy CAM against torch's.
2. Query-blocked (chunk 1024) vs explicit PAM at N = 16,384 (H = W = 128), float64: peak memory
   (tracemalloc, which sees NumPy's allocations), time and the largest difference.

Timings are the best of ``--repeats`` runs, the contenders interleaved so that a busy machine
slows all alike. Usage:
``python benchmarks/bench_attention.py [--quick] [--threads 2] [--repeats 5] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import torch

import refimpl
from danet import ChannelAttention, PositionAttention, state_dict_to_numpy

GEMM_SIZE = 2048


def interleaved_best(fns: dict, repeats: int) -> dict:
    """Best wall time of each callable, running them in turn ``repeats`` times."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def pam_flops(C: int, N: int, Cr: int) -> float:
    """FLOPs of one PAM forward, counted alike for every implementation (2 per multiply-add):

        2·N·C·(2·C' + C)   the 1x1 convolutions B, C (C' rows each) and D (C rows)
      + 2·N·N·C'           the energy BᵀC
      + 2·N·N·C            E = D·Sᵀ

    The softmax's max, exp, sum and divide (O(N²), not matrix products) are not counted.
    """
    return 2.0 * N * C * (2 * Cr + C) + 2.0 * N * N * Cr + 2.0 * N * N * C


def bench_speed(C: int, H: int, W: int, repeats: int, gemm_size: int = GEMM_SIZE) -> dict:
    N = H * W
    rng = np.random.default_rng(0)
    pam = PositionAttention(C, impl="explicit").eval()
    cam = ChannelAttention().eval()
    with torch.no_grad():
        pam.gamma.fill_(0.5)
        cam.gamma.fill_(0.5)
    w_pam, w_cam = state_dict_to_numpy(pam), state_dict_to_numpy(cam)
    x = (rng.standard_normal((1, C, H, W)) * 0.1).astype(np.float32)
    xt = torch.from_numpy(x)
    a = rng.standard_normal((gemm_size, gemm_size), dtype=np.float32)
    b = rng.standard_normal((gemm_size, gemm_size), dtype=np.float32)

    with torch.no_grad():
        t = interleaved_best({
            "gemm": lambda: a @ b,
            "numpy_pam": lambda: refimpl.position_attention(x, w_pam),
            "numpy_pam_explicit": lambda: refimpl.position_attention(x, w_pam, return_attention=True),
            "torch_pam": lambda: pam(xt),
            "numpy_cam": lambda: refimpl.channel_attention(x, w_cam),
            "torch_cam": lambda: cam(xt),
        }, repeats)
        want = pam(xt).numpy()
        err = float(np.abs(refimpl.position_attention(x, w_pam) - want).max())
        err_explicit = float(np.abs(refimpl.position_attention(x, w_pam, return_attention=True)[0] - want).max())
    gemm_gflops = 2.0 * gemm_size ** 3 / t["gemm"] / 1e9
    flops = pam_flops(C, N, C // 8)
    gflops = {k: flops / t[k] / 1e9 for k in ("numpy_pam", "numpy_pam_explicit", "torch_pam")}
    return {
        "shape": [1, C, H, W], "N": N, "gemm_size": gemm_size, "seconds": t, "pam_flops": flops,
        "gemm_gflops": gemm_gflops,
        "pam_gflops": gflops,
        "pam_fraction_of_gemm": {k: v / gemm_gflops for k, v in gflops.items()},
        "numpy_pam_gflops": gflops["numpy_pam"],
        "numpy_pam_fraction_of_gemm": gflops["numpy_pam"] / gemm_gflops,
        "pam_torch_over_numpy_time": t["torch_pam"] / t["numpy_pam"],
        "cam_torch_over_numpy_time": t["torch_cam"] / t["numpy_cam"],
        "pam_max_abs_diff_vs_torch": max(err, err_explicit),
    }


def peak_bytes(fn) -> tuple[int, float, np.ndarray]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, seconds, out


def bench_chunked(C: int, H: int, W: int, chunk: int, repeats: int) -> dict:
    rng = np.random.default_rng(1)
    pam = PositionAttention(C).double().eval()
    with torch.no_grad():
        pam.gamma.fill_(0.5)
    w = state_dict_to_numpy(pam)
    x = rng.standard_normal((1, C, H, W)) * 0.1
    run_full = lambda: refimpl.position_attention(x, w, return_attention=True)[0]  # noqa: E731  whole N x N
    run_chunk = lambda: refimpl.position_attention(x, w, chunk_size=chunk)  # noqa: E731
    peak_full, _, out_full = peak_bytes(run_full)
    peak_chunk, _, out_chunk = peak_bytes(run_chunk)
    t = interleaved_best({"unchunked": run_full, "chunked": run_chunk}, repeats)
    return {
        "shape": [1, C, H, W], "N": H * W, "chunk_size": chunk, "dtype": "float64",
        "peak_bytes": {"unchunked": peak_full, "chunked": peak_chunk},
        "seconds": t,
        "peak_memory_ratio_chunked_over_unchunked": peak_chunk / peak_full,
        "time_ratio_chunked_over_unchunked": t["chunked"] / t["unchunked"],
        "max_abs_diff": float(np.abs(out_full - out_chunk).max()),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        speed = bench_speed(64, 16, 16, 2, gemm_size=256)
        chunked = bench_chunked(32, 24, 24, 64, 1)
    else:
        speed = bench_speed(512, 65, 65, args.repeats)
        chunked = bench_chunked(512, 128, 128, 1024, max(2, args.repeats // 2))
    result = {"torch_threads": torch.get_num_threads(), "speed": speed, "chunked": chunked}

    s, c = speed, chunked
    g = s["gemm_size"]
    print(f"PAM/CAM, float32, shape {s['shape']} (N = {s['N']}), torch threads {result['torch_threads']}, "
          f"PAM FLOPs {s['pam_flops'] / 1e9:.2f} G")
    print(f"  GEMM {g}x{g}x{g}               {s['gemm_gflops']:8.1f} GFLOP/s")
    for name, label in (("numpy_pam", "NumPy PAM (query blocks)"), ("numpy_pam_explicit", "NumPy PAM (whole N x N)"),
                        ("torch_pam", "torch explicit PAM")):
        print(f"  {label:<30} {s['pam_gflops'][name]:8.1f} GFLOP/s = {s['pam_fraction_of_gemm'][name]:.2f} of GEMM")
    print(f"  torch time / NumPy time        PAM {s['pam_torch_over_numpy_time']:.2f}x   "
          f"CAM {s['cam_torch_over_numpy_time']:.2f}x   (> 1: NumPy is faster)")
    print(f"  max |NumPy - torch| PAM        {s['pam_max_abs_diff_vs_torch']:.2e}")
    print(f"Chunked vs explicit (unchunked) PAM, float64, shape {c['shape']} (N = {c['N']}), chunk {c['chunk_size']}")
    print(f"  peak memory                    {c['peak_bytes']['chunked'] / 2**20:.0f} MiB vs "
          f"{c['peak_bytes']['unchunked'] / 2**20:.0f} MiB = {c['peak_memory_ratio_chunked_over_unchunked']:.3f}")
    print(f"  time chunked / unchunked       {c['time_ratio_chunked_over_unchunked']:.3f}")
    print(f"  max |chunked - unchunked|      {c['max_abs_diff']:.2e}")
    if args.json:
        from pipeline.artifacts import write_json  # here: loading it brings numpy and torch

        write_json(args.json, result)   # atomic; NumPy values as numbers
    return result


if __name__ == "__main__":
    main()
