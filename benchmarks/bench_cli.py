"""The ``danet`` command at full size, one run: ``predict`` on a whole Cityscapes-sized image and
``check`` on a ResNet-50 DANet.

What is measured
    1. ``danet predict`` in a fresh Python process on one 1024×2048 smooth synthetic image
       (colour gradients and discs) with a ResNet-50 DANet (19 classes, random weights with
       γ = β = 0.5 and non-trivial BatchNorm statistics) saved as a project checkpoint: its peak
       resident set size, the kernel's ``VmHWM`` of that process read at its end (a fresh process
       after exec starts its own high-water mark), its wall time, and that every output was
       written (the three PNGs and ``predictions.json``). Bar: peak RSS ≤ 4 GiB. For scale: the
       explicit PAM's N×N matrix alone would be 4 GiB here (N = 128·256 = 32,768, float32);
       ``danet`` computes it in query blocks and the figure's q rows as q×N.
    2. ``danet check`` on the same network at 512×512 in float64 and in float32, each in a fresh
       process: the overall max relative error of refimpl.danet_forward against PyTorch over all
       stages, the NumPy and PyTorch times, the process's peak RSS. Bars: ≤ 1e-10 (float64),
       ≤ 1e-4 (float32).

The checkpoint is built in a separate process, so this one never imports torch and its memory
does not enter the measured processes. Times depend on the shared CPU; they are reported, not
judged.

Usage: ``python benchmarks/bench_cli.py [--quick] [--json out.json]``. ``--quick`` uses the tiny
backbone, a 128×256 image and a 64×64 check: a smoke run of the machinery, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024 ** 3

MAKE_CHECKPOINT = """
import sys, torch
from torch import nn
from danet import DANet
torch.manual_seed(0)
model = DANet(19, sys.argv[2]).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if p.dim() == 4:                                      # He-scaled convolutions
            p.normal_(0, (2 / p[0].numel()) ** 0.5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):                     # BN statistics != (0, 1)
            m.weight.uniform_(0.5, 1.0); m.bias.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1); m.running_var.uniform_(0.5, 1.5)
    model.head.sa.gamma.fill_(0.5); model.head.sc.gamma.fill_(0.5)
torch.save(model.state_dict(), sys.argv[1])
"""

# Run the CLI in this process and report the kernel's high-water mark of its resident set.
RUN_CLI = """
import json, sys
from danet.cli import main
status = main(sys.argv[1:])
hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
print('BENCH ' + json.dumps({'status': status, 'vm_hwm_kib': hwm}))
"""


def scene(H: int, W: int) -> np.ndarray:
    """A smooth photo-like uint8 image: colour gradients and a few discs."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    ys, xs = ys / H, xs / W
    img = np.stack([0.5 + 0.4 * np.sin(6 * xs), 0.5 + 0.4 * np.cos(5 * ys), 0.3 + 0.4 * xs * ys], -1)
    for cy, cx, r, colour in ((0.5, 0.2, 0.15, (0.9, 0.9, 0.2)), (0.3, 0.7, 0.1, (0.1, 0.2, 0.8))):
        img[((ys - cy) * H / W) ** 2 + (xs - cx) ** 2 < r ** 2] = colour
    return (img * 255).astype(np.uint8)


def run_cli(args: list[str]) -> dict:
    """``danet ARGS`` in a fresh process: exit status, peak RSS (GiB), wall seconds, stdout."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", RUN_CLI, *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    line = next((l for l in res.stdout.splitlines() if l.startswith("BENCH ")), None)
    if res.returncode not in (0, 3) or line is None:
        raise RuntimeError(f"danet {' '.join(args)} failed ({res.returncode}): {res.stderr[-2000:]}")
    report = json.loads(line[len("BENCH "):])
    return {"status": report["status"], "peak_rss_gib": round(report["vm_hwm_kib"] * 1024 / GIB, 3),
            "seconds": round(seconds, 1), "stdout": res.stdout}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--check-backbone", default=None, help="backbone of the check (default: resnet50)")
    parser.add_argument("--check-size", default=None, help="HxW of the check image (default: 512x512)")
    parser.add_argument("--skip-predict", action="store_true", help="only the check")
    args = parser.parse_args(argv)
    from PIL import Image

    backbone, (H, W), side = ("tiny", (128, 256), 64) if args.quick else ("resnet50", (1024, 2048), 512)
    check_backbone = args.check_backbone or backbone
    ch, cw = map(int, args.check_size.split("x")) if args.check_size else (side, side)
    result = {"backbone": backbone, "predict_image": [H, W], "check_backbone": check_backbone, "check_image": [ch, cw]}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, f"danet_{backbone}.pt")
        check_ckpt = os.path.join(tmp, f"danet_{check_backbone}.pt")
        for name in {backbone, check_backbone}:
            subprocess.run([sys.executable, "-c", MAKE_CHECKPOINT, os.path.join(tmp, f"danet_{name}.pt"), name],
                           cwd=ROOT, check=True)
        Image.fromarray(scene(H, W)).save(os.path.join(tmp, "city.png"))
        Image.fromarray(scene(ch, cw)).save(os.path.join(tmp, "square.png"))

        out = os.path.join(tmp, "out")
        if not args.skip_predict:
            predict = run_cli(["predict", os.path.join(tmp, "city.png"), "--checkpoint", ckpt, "--out", out,
                               "--classes", "cityscapes"])
            expected = {"predictions.json"} | {f"city_{k}.png" for k in ("segmentation", "overlay", "attention")}
            written = sorted(os.listdir(out))
            result["predict"] = {"peak_rss_gib": predict["peak_rss_gib"], "seconds": predict["seconds"],
                                 "outputs": written,
                                 "all_written": set(written) == expected and predict["status"] == 0,
                                 "within_4_gib": predict["peak_rss_gib"] <= 4.0}
            print(f"predict {H}×{W}, {backbone}: peak RSS {predict['peak_rss_gib']:.2f} GiB (bar 4 GiB), "
                  f"{predict['seconds']:.0f} s, outputs {written}")

        from danet.numerics import TOLERANCE    # the bars of danet check

        for dtype, bar in TOLERANCE.items():
            report = os.path.join(tmp, f"check_{dtype}.json")
            run = run_cli(["check", os.path.join(tmp, "square.png"), "--checkpoint", check_ckpt, "--dtype", dtype,
                           "--json", report])
            with open(report) as f:
                check = json.load(f)
            result[f"check_{dtype}"] = {
                "overall_max_rel_error": check["overall_max_rel_error"], "bar": bar,
                "within_bar": check["overall_max_rel_error"] <= bar, "seconds": check["seconds"],
                "peak_rss_gib": run["peak_rss_gib"], "process_seconds": run["seconds"],
                "worst_stage": max(check["stages"], key=check["stages"].get), "stages": check["stages"]}
            print(f"check {ch}×{cw} {check_backbone} {dtype}: overall max rel error {check['overall_max_rel_error']:.3e} "
                  f"(bar {bar:.0e}, worst stage {result[f'check_{dtype}']['worst_stage']}), NumPy "
                  f"{check['seconds']['numpy']:.1f} s, PyTorch {check['seconds']['torch']:.1f} s, "
                  f"peak RSS {run['peak_rss_gib']:.2f} GiB")
    if args.json:
        from pipeline.artifacts import write_json  # here: loading it brings numpy and torch

        write_json(args.json, result)   # atomic; NumPy values as numbers
    return result


if __name__ == "__main__":
    main()
