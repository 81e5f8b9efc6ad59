"""``danet explore`` against ``danet predict``, one run, with a ResNet-50 DANet.

What is measured
    1. 512×512: ``danet predict`` and ``danet explore`` on the same smooth synthetic image
       (bench_cli's ``scene``), each in a fresh Python process, alternated ``--repeats`` times;
       the ratio of the fastest explore to the fastest predict (process wall time: start, torch
       import, checkpoint load, forward, writing). Bars: ratio ≤ 2, page ≤ 2 MiB.
    2. 1024×2048: ``danet explore`` in a fresh process: page size, query grid, the kernel's ``VmHWM`` of the
       process (peak resident set) and wall time. Bars: page ≤ 8 MiB, peak RSS ≤ 4 GiB.
    Every page is also checked to be self-contained (no ``http://`` or ``https://`` anywhere).

The checkpoint (19 classes, random He-scaled weights, γ = β = 0.5, BatchNorm statistics ≠ (0, 1))
is bench_cli's, built in a separate process; processes are run and measured by bench_cli's
``run_cli``. Times depend on the shared CPU: the ratio is the figure, not the seconds.

Usage: ``python benchmarks/bench_explore.py [--quick] [--repeats 2] [--json out.json]``.
``--quick``: the tiny backbone and 128×128 / 256×512 images, a smoke run of the machinery.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_cli import MAKE_CHECKPOINT, ROOT, run_cli, scene  # noqa: E402

MIB = 2 ** 20


def _page(out: str, stem: str) -> dict:
    path = os.path.join(out, f"{stem}_explorer.html")
    text = open(path, encoding="utf-8").read()
    pam = json.loads(re.search(r'id="danet-data">(.*?)</script>', text, re.S).group(1))["pam"]
    return {"page_mib": round(os.path.getsize(path) / MIB, 3), "query_stride": pam["stride"],
            "query_grid": [len(pam["qi"]), len(pam["qj"])],
            "self_contained": "http://" not in text and "https://" not in text}


def compare(tmp: str, ckpt: str, side: int, repeats: int) -> dict:
    """Fastest ``predict`` and ``explore`` (fresh processes, alternated) on a side×side image."""
    img = os.path.join(tmp, "square.png")
    Image.fromarray(scene(side, side)).save(img)
    times = {"predict": [], "explore": []}
    rss = {}
    for r in range(repeats):
        for command in ("predict", "explore"):
            out = os.path.join(tmp, f"{command}{r}")
            run = run_cli([command, img, "--checkpoint", ckpt, "--out", out, "--classes", "cityscapes"])
            times[command].append(run["seconds"])
            rss[command] = max(rss.get(command, 0), run["peak_rss_gib"])
    page = _page(os.path.join(tmp, "explore0"), "square")
    ratio = min(times["explore"]) / min(times["predict"])
    return {"image": [side, side], "seconds": times, "peak_rss_gib": rss, "ratio": round(ratio, 3),
            "ratio_within_2": ratio <= 2.0, **page, "page_within_2_mib": page["page_mib"] <= 2.0}


def large(tmp: str, ckpt: str, H: int, W: int) -> dict:
    """``explore`` on an H×W image in a fresh process: page size, peak RSS, time."""
    img = os.path.join(tmp, "city.png")
    Image.fromarray(scene(H, W)).save(img)
    out = os.path.join(tmp, "large")
    run = run_cli(["explore", img, "--checkpoint", ckpt, "--out", out, "--classes", "cityscapes"])
    page = _page(out, "city")
    return {"image": [H, W], "seconds": run["seconds"], "peak_rss_gib": run["peak_rss_gib"], **page,
            "page_within_8_mib": page["page_mib"] <= 8.0, "rss_within_4_gib": run["peak_rss_gib"] <= 4.0}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    backbone, side, (H, W) = ("tiny", 128, (256, 512)) if args.quick else ("resnet50", 512, (1024, 2048))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, f"danet_{backbone}.pt")
        subprocess.run([sys.executable, "-c", MAKE_CHECKPOINT, ckpt, backbone], cwd=ROOT, check=True)
        result = {"backbone": backbone, "square": compare(tmp, ckpt, side, args.repeats),
                  "large": large(tmp, ckpt, H, W)}
    sq, lg = result["square"], result["large"]
    print(f"{side}×{side}, {backbone}: explore {min(sq['seconds']['explore']):.1f} s vs predict "
          f"{min(sq['seconds']['predict']):.1f} s (fastest of {args.repeats} fresh processes each): ratio "
          f"{sq['ratio']:.2f} (bar 2); page {sq['page_mib']:.2f} MiB (bar 2), query grid {sq['query_grid']} "
          f"(stride {sq['query_stride']}), self-contained {sq['self_contained']}; "
          f"peak RSS explore {sq['peak_rss_gib']['explore']:.2f} GiB, predict {sq['peak_rss_gib']['predict']:.2f} GiB")
    print(f"{H}×{W}, {backbone}: explore page {lg['page_mib']:.2f} MiB (bar 8), query grid {lg['query_grid']} "
          f"(stride {lg['query_stride']}), peak RSS {lg['peak_rss_gib']:.2f} GiB "
          f"(bar 4), {lg['seconds']:.0f} s, self-contained {lg['self_contained']}")
    if args.json:
        from pipeline.artifacts import write_json  # here: loading it brings numpy and torch

        write_json(args.json, result)   # atomic; NumPy values as numbers
    return result


if __name__ == "__main__":
    main()
