"""Whole-network forward: ``refimpl.danet_forward`` (NumPy) vs ``danet.DANet`` (torch, CPU), one run.

What is measured
    A ResNet-50 DANet (output stride 8, plain stem, 19 classes, random weights with He-scaled
    convolutions, BatchNorm statistics ≠ (0, 1) and γ = β = 0.5, so the attention is not the
    identity) on one float32 image of 512 x 512 (feature map 64 x 64, N = 4,096), inference
    (``--size HxW`` and ``--dtype float64`` for another image and precision, e.g. ``--size 360x480
    --dtype float64``: the GPU campaign's whole-network check of a CamVid image):

    - torch: ``torch.set_num_threads(--threads)``, ``eval()``, ``no_grad``; best of ``--repeats``
      forwards after a small warm-up forward, half of them before the NumPy process runs and
      half after it;
    - NumPy: in a fresh Python process that never imports torch (OpenBLAS limited to ``--threads``
      threads), weights read from an ``.npz`` with :func:`refimpl.load_npz`; best of ``--repeats``
      forwards of :func:`refimpl.danet_forward`.

    Reported: seconds of each, the ratio NumPy / torch (the bar: <= 3), the NumPy process's peak
    resident set size (``VmHWM`` from ``/proc/self/status``, absolute: interpreter, NumPy, weights,
    image and the forward's own peak; the bar: <= 6 GiB; not ``ru_maxrss``, which a child process
    inherits from its parent's high-water mark) and, where ``/proc/self/clear_refs`` lets the
    high-water mark be reset after loading, the part the forward added; the largest difference
    between the two fused logits, relative to torch's largest |logit|. On a machine shared with
    other work the times are noisy; the memory figure is not.

Usage: ``python benchmarks/bench_network.py [--quick] [--size 512|HxW] [--dtype float32|float64]
[--backbone resnet50] [--threads 2] [--repeats 2] [--json out.json]``. ``--quick`` runs the tiny
backbone once (at 64 x 64 unless ``--size`` says otherwise): a smoke run of the machinery, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

GIB = 2 ** 30
BAR_TIME_RATIO = 3.0     # NumPy time <= 3 x torch's
BAR_PEAK_RSS = 6 * GIB   # NumPy process peak RSS at 512 x 512, ResNet-50


# one reader of /proc/self for both memory benchmarks (this script runs as ``python benchmarks/...``,
# so its own folder is on sys.path); bench_pam_memory imports neither numpy nor torch at load
from bench_pam_memory import _reset_peak, _status_bytes  # noqa: E402


# ---------------------------------------------------------------- the NumPy side, in its own process

def _worker(spec: dict) -> dict:
    import numpy as np

    import refimpl

    weights = refimpl.load_npz(spec["weights"])
    image = np.load(spec["image"])                                     # (1, 3, H0, W0), the run's dtype
    loaded = _status_bytes()                                           # VmHWM: the peak while loading
    before = loaded["VmRSS"]
    reset = _reset_peak()
    times = []
    for _ in range(spec["repeats"]):
        outputs = None                                                 # the previous output is not kept
        t0 = time.perf_counter()
        outputs = refimpl.danet_forward(image, weights)
        times.append(time.perf_counter() - t0)
    status = _status_bytes()
    np.save(spec["save"], outputs[0])
    return {"seconds": min(times), "all_seconds": times, "rss_before_forward": before,
            "peak_rss": max(loaded["VmHWM"], status["VmHWM"]),
            "peak_added_by_forward": status["VmHWM"] - before if reset else None,
            "torch_imported": "torch" in sys.modules, "numpy": np.__version__}


def _run_worker(spec: dict, threads: int) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_network NumPy worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the torch side and the comparison

def random_danet(backbone: str, num_classes: int, seed: int = 0):
    """A DANet with random weights that keep activations O(1), BN statistics ≠ (0, 1), γ = β = 0.5."""
    import numpy as np
    import torch

    from danet import DANet

    rng = np.random.default_rng(seed)
    model = DANet(num_classes, backbone).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 4:
                w = rng.standard_normal(p.shape, dtype=np.float32) * np.float32((2 / p[0].numel()) ** 0.5)
            elif name.endswith("gamma"):
                w = np.full(p.shape, 0.5, np.float32)
            elif name.endswith(".weight"):
                w = rng.uniform(0.5, 1.0, p.shape).astype(np.float32)
            else:
                w = rng.standard_normal(p.shape, dtype=np.float32) * np.float32(0.1)
            p.copy_(torch.from_numpy(w))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.from_numpy(rng.standard_normal(b.shape, dtype=np.float32) * np.float32(0.1)))
            elif name.endswith("running_var"):
                b.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, b.shape).astype(np.float32)))
    return model


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny backbone at 64 x 64, once: a smoke run")
    ap.add_argument("--size", default=None, help="image size: S (S x S) or HxW (default 512; --quick 64)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="the forward's precision")
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--threads", type=int, default=2, help="torch threads and OpenBLAS threads (default 2)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return {}

    import numpy as np
    import torch

    from danet import export_npz

    if args.quick:
        args.size, args.backbone, args.repeats = args.size or "64", "tiny", 1
    H, W = _size(ap, args.size or "512")
    torch.set_num_threads(args.threads)
    model = random_danet(args.backbone, args.classes).to(getattr(torch, args.dtype))
    image = np.random.default_rng(1).standard_normal((1, 3, H, W)).astype(args.dtype)
    torch_times = []

    @torch.no_grad()
    def time_torch(repeats):
        fused = None
        for _ in range(repeats):
            t0 = time.perf_counter()
            fused = model(torch.from_numpy(image))[0].numpy()
            torch_times.append(time.perf_counter() - t0)
        return fused

    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64, dtype=getattr(torch, args.dtype)))  # warm-up, not measured
    # torch before and after the NumPy process, so that a burst of load elsewhere does not favour one
    fused_torch = time_torch((args.repeats + 1) // 2)
    with tempfile.TemporaryDirectory(prefix="bench_network_") as tmp:
        spec = {"weights": export_npz(model, os.path.join(tmp, "danet.npz")),
                "image": os.path.join(tmp, "image.npy"), "save": os.path.join(tmp, "fused.npy"),
                "repeats": args.repeats}
        np.save(spec["image"], image)
        numpy_side = _run_worker(spec, args.threads)
        fused_numpy = np.load(spec["save"])
    time_torch(args.repeats // 2)

    result = {
        "backbone": args.backbone, "image": [H, W], "dtype": args.dtype, "classes": args.classes,
        "feature_map": [H // 8, W // 8], "threads": args.threads, "repeats": args.repeats,
        "torch_seconds": min(torch_times), "torch_all_seconds": torch_times,
        "numpy_seconds": numpy_side["seconds"], "numpy_all_seconds": numpy_side["all_seconds"],
        "ratio_numpy_over_torch": numpy_side["seconds"] / min(torch_times),
        "numpy_peak_rss_bytes": numpy_side["peak_rss"],
        "numpy_rss_before_forward_bytes": numpy_side["rss_before_forward"],
        "numpy_peak_added_by_forward_bytes": numpy_side["peak_added_by_forward"],
        "numpy_worker_imported_torch": numpy_side["torch_imported"],
        "fused_max_rel_diff": float(np.abs(fused_numpy - fused_torch).max() / np.abs(fused_torch).max()),
        "torch": torch.__version__, "numpy": numpy_side["numpy"],
    }
    result["bars"] = {"time_ratio_le_3": result["ratio_numpy_over_torch"] <= BAR_TIME_RATIO,
                      "peak_rss_le_6_gib": result["numpy_peak_rss_bytes"] <= BAR_PEAK_RSS}
    r = result
    added = r["numpy_peak_added_by_forward_bytes"]
    print(f"DANet {r['backbone']}, {r['classes']} classes, image {H}x{W} {args.dtype} "
          f"(N = {(H // 8) * (W // 8)}), {args.threads} threads, best of {args.repeats}")
    print(f"  torch CPU forward        {r['torch_seconds']:8.2f} s")
    print(f"  NumPy forward            {r['numpy_seconds']:8.2f} s   = {r['ratio_numpy_over_torch']:.2f} x torch "
          f"(bar <= {BAR_TIME_RATIO:g})")
    print(f"  NumPy process peak RSS   {r['numpy_peak_rss_bytes'] / GIB:8.2f} GiB (bar <= {BAR_PEAK_RSS / GIB:g}); "
          f"{r['numpy_rss_before_forward_bytes'] / GIB:.2f} GiB before the forward"
          + (f", {added / GIB:.2f} GiB added by it" if added is not None else ""))
    print(f"  fused logits max |NumPy - torch| / max |torch| = {r['fused_max_rel_diff']:.1e}")
    if args.json:
        from pipeline.artifacts import write_json  # here: loading it brings numpy and torch

        write_json(args.json, result)   # atomic; NumPy values as numbers
    return result


def _size(ap, text: str) -> tuple[int, int]:
    """``"S"`` -> (S, S); ``"HxW"`` -> (H, W); anything else is refused naming --size."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
        if len(parts) not in (1, 2) or min(parts) < 8:
            raise ValueError
    except ValueError:
        ap.error(f"--size: expected S or HxW with sides >= 8, got {text!r}")
    return (parts[0], parts[-1])


if __name__ == "__main__":
    main()
