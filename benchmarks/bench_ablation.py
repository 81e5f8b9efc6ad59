"""DANet vs the dilated-FCN baseline on the built-in dataset, for several seeds.

Trains and evaluates ``attention="both"`` and ``attention="none"`` with the given preset for each
seed through the pipeline (reusing finished artifacts under ``--root``) and prints the mIoU gap
per seed. The claim it checks: DANet beats the FCN by at least 0.10 mIoU for every seed.

Usage: ``python benchmarks/bench_ablation.py [--preset cpu] [--seeds 0 1 2] [--root artifacts] [--all-four]``
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import luigi

import pipeline


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--root", default="artifacts")
    ap.add_argument("--all-four", action="store_true", help="also train PAM-only and CAM-only")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    config = luigi.configuration.get_config()
    config.set("pipeline", "root", args.root)
    config.set("pipeline", "progress", "false")
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    attentions = ("none", "pam", "cam", "both") if args.all_four else ("none", "both")
    tasks = {(s, a): pipeline.Evaluation(preset=args.preset, seed=s, attention=a)
             for s in args.seeds for a in attentions}
    t0 = time.time()
    ok = luigi.build(list(tasks.values()), local_scheduler=True, workers=args.workers)
    if not ok:
        raise SystemExit("some training or evaluation failed; see the log above")
    rows = {}
    for s in args.seeds:
        miou = {a: json.loads(open(tasks[(s, a)].output().path).read())["miou"] for a in attentions}
        rows[s] = {**miou, "gap": miou["both"] - miou["none"]}
    print(f"preset {args.preset}: mIoU on the val split ({time.time() - t0:.0f} s)")
    print("seed  " + "  ".join(f"{a:>6}" for a in attentions) + "   DANet-FCN")
    for s, r in rows.items():
        print(f"{s:>4}  " + "  ".join(f"{r[a]:6.3f}" for a in attentions) + f"   {r['gap']:+.3f}")
    worst = min(r["gap"] for r in rows.values())
    print(f"smallest gap over seeds: {worst:+.3f} ({'meets' if worst >= 0.10 else 'misses'} the 0.10 bar)")
    result = {"preset": args.preset, "per_seed": rows, "min_gap": worst}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
