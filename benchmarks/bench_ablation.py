"""DANet vs the dilated-FCN baseline, for several seeds: on the built-in dataset, or a real one.

Trains and evaluates ``attention="both"`` and ``attention="none"`` with the given preset for each
seed through the pipeline (reusing finished artifacts under ``--root``) and prints, per seed, the
mIoU of each model, the IoU of the two keyed classes (red-keyed, blue-keyed shape), DANet's learned
scales γ (PAM) and β (CAM), the training time of each model, and the share of DANet's position
attention that a shape pixel puts on the key, measured at feature resolution, against the key's
area share, and the keyed IoUs of DANet with PAM switched off (γ = 0) and with CAM switched off
(β = 0), which says which module the fused output relies on (``--key-share``). The claim it checks: DANet beats the FCN by at least 0.10 mIoU for
every seed.

On a real dataset (``--dataset camvid --data-root DIR``) it prints, per seed, the mIoU of each
model and the gap, then every class's IoU for each model as mean and range over the seeds; there
is no bar: the numbers are what they are.

Usage: ``python benchmarks/bench_ablation.py [--preset P (default: the dataset's own)] [--seeds 0 1 2] [--root artifacts] [--all-four]
[--key-share] [--dataset camvid --data-root DIR]``; ``--preset tutorial --seeds 0 1 2 3 4 --key-share`` is
the seed study of notebook 09, ``--dataset camvid --preset camvid --data-root DIR`` the README's CamVid table.
"""

from __future__ import annotations

import argparse
import logging
import time

import luigi
import numpy as np

import pipeline
from pipeline.artifacts import read_json, write_json
from pipeline.build import load_dataset, read_dataset
from pipeline.knockout import key_share, knock_out

KEYED = ("red-keyed shape", "blue-keyed shape")


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; ``--preset`` defaults to the dataset's own, as the pipeline's tasks do."""
    from pipeline.presets import preset_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="", help="default: the dataset's own (synthetic: cpu, camvid: camvid)")
    ap.add_argument("--dataset", default="synthetic", help="synthetic (built-in) or a real dataset, e.g. camvid")
    ap.add_argument("--data-root", default="", help="where the real dataset lies (as FullReport's --data-root)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--root", default="artifacts")
    ap.add_argument("--all-four", action="store_true", help="also train PAM-only and CAM-only")
    ap.add_argument("--key-share", action="store_true",
                    help="measure DANet's PAM attention on the key, and its keyed IoUs with PAM or CAM off")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.key_share and args.dataset != "synthetic":
        ap.error("--key-share measures the built-in dataset's key; it needs --dataset synthetic")
    try:
        args.preset = args.preset or preset_for(args.dataset)
    except ValueError as err:
        ap.error(str(err))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = luigi.configuration.get_config()
    config.set("pipeline", "root", args.root)
    config.set("pipeline", "progress", "false")
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    attentions = ("none", "pam", "cam", "both") if args.all_four else ("none", "both")
    synthetic = args.dataset == "synthetic"
    tasks = {(s, a): pipeline.Evaluation(dataset=args.dataset, data_root=args.data_root, preset=args.preset,
                                         seed=s, attention=a)
             for s in args.seeds for a in attentions}
    t0 = time.time()
    ok = luigi.build(list(tasks.values()), local_scheduler=True, workers=args.workers)
    if not ok:
        raise SystemExit("some training or evaluation failed; see the log above")
    rows = {}
    for s in args.seeds:
        evals = {a: read_json(tasks[(s, a)].output()) for a in attentions}
        trained = {a: tasks[(s, a)].requires()["model"] for a in attentions}
        train = {a: read_json(trained[a].output())["train"] for a in attentions}
        row = {a: evals[a]["miou"] for a in attentions}
        row.update(gap=row["both"] - row["none"], gamma=train["both"]["gamma_pam"], beta=train["both"]["beta_cam"],
                   per_class={a: evals[a]["per_class_iou"] for a in attentions},
                   train_seconds={a: train[a]["seconds"] for a in attentions})
        if synthetic:
            row["keyed"] = {a: [evals[a]["per_class_iou"][k] for k in KEYED] for a in attentions}
        if args.key_share:
            model = trained["both"].load_model(trained["both"].output())
            val = load_dataset(read_dataset(trained["both"].input()), "val")
            row["key_share"], row["key_area"] = key_share(model, val)
            row.update({k: [iou[c] for c in KEYED] for k, iou in knock_out(model, val).items() if k != "full"})
        rows[s] = row
    print(f"{args.dataset}, preset {args.preset}: mIoU on the val split ({time.time() - t0:.0f} s)")
    if not synthetic:
        return _write(args.json, _real_table(args, rows, attentions))
    print("seed  " + "  ".join(f"{a:>6}" for a in attentions) + "   DANet-FCN   keyed IoU FCN   keyed IoU DANet"
          + "   gamma    beta   train s (FCN, DANet)"
          + ("   key share / area   keyed IoU PAM off   CAM off" if args.key_share else ""))
    for s, r in rows.items():
        line = (f"{s:>4}  " + "  ".join(f"{r[a]:6.3f}" for a in attentions) + f"   {r['gap']:+.3f}     "
                + "  ".join(map(_iou, r["keyed"]["none"])) + "      "
                + "  ".join(map(_iou, r["keyed"]["both"]))
                + f"      {r['gamma']:+.2f}  {r['beta']:+.2f}   {r['train_seconds']['none']:.0f}, {r['train_seconds']['both']:.0f}")
        if args.key_share:
            line += (f"   {r['key_share']:.2f} / {r['key_area']:.2f}        "
                     + "  ".join(map(_iou, r["pam_off"])) + "        "
                     + "  ".join(map(_iou, r["cam_off"])))
        print(line)
    worst = min(r["gap"] for r in rows.values())
    print(f"smallest gap over seeds: {worst:+.3f} ({'meets' if worst >= 0.10 else 'misses'} the 0.10 bar)")
    return _write(args.json, {"preset": args.preset, "per_seed": rows, "min_gap": worst})


def _iou(v) -> str:
    """An IoU to two decimals; "-" for a class absent from both prediction and labels (None)."""
    return "   -" if v is None else f"{v:.2f}"


def _write(path: str | None, result: dict) -> dict:
    """``result``, also written to ``path`` as JSON when one is given (``--json``)."""
    if path:
        write_json(path, result)
    return result


def _real_table(args, rows: dict, attentions) -> dict:
    """Per seed: mIoU of each model, the gap, γ, β, training seconds; then per class: mean [min, max] over seeds."""
    print("seed  " + "  ".join(f"{a:>6}" for a in attentions) + "   DANet-FCN    gamma    beta   train s (FCN, DANet)")
    for s, r in rows.items():
        print(f"{s:>4}  " + "  ".join(f"{r[a]:6.3f}" for a in attentions) + f"   {r['gap']:+.3f}      "
              f"{r['gamma']:+.2f}  {r['beta']:+.2f}   {r['train_seconds']['none']:.0f}, {r['train_seconds']['both']:.0f}")
    mean = {a: float(np.mean([r[a] for r in rows.values()])) for a in attentions}
    print("mean  " + "  ".join(f"{mean[a]:6.3f}" for a in attentions) + f"   {mean['both'] - mean['none']:+.3f}")
    print(f"per-class IoU, mean [min, max] over seeds {list(rows)}")
    classes = list(next(iter(rows.values()))["per_class"]["none"])
    per_class = {}
    print(f"{'class':<14}" + "".join(f"{a:>22}" for a in attentions))
    for c in classes:
        values = {a: [r["per_class"][a][c] for r in rows.values() if r["per_class"][a][c] is not None]
                  for a in attentions}
        per_class[c] = {a: [float(np.mean(v)), float(min(v)), float(max(v))] if v else None for a, v in values.items()}
        print(f"{c:<14}" + "".join(f"{'n/a':>22}" if not per_class[c][a] else
                                   "{:>22}".format("{:.3f} [{:.3f}, {:.3f}]".format(*per_class[c][a]))
                                   for a in attentions))
    return {"dataset": args.dataset, "preset": args.preset, "per_seed": rows, "mean_miou": mean,
            "per_class": per_class}


if __name__ == "__main__":
    main()
