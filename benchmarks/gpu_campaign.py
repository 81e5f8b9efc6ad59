"""One call on a GPU machine: a ResNet-50 DANet and its dilated FCN trained on CamVid's street scenes,
checked against the NumPy reference, and the GPU path measured -- everything into one folder.

::

    python benchmarks/gpu_campaign.py --data-root CAMVID --out OUT [--budget-s 510] [--train-budget-s 120]
                                      [--pretrained-backbone resnet50.pth] [--work DIR] [--smoke]

Runs on any CUDA machine without network (luigi and its needs travel as wheels: docs/gpu.md). The
sections run in this order, each under a time limit inside the campaign's budget: a section that
would start with less time left than it needs is skipped, one that overruns is interrupted, and
``OUT/results.json`` is rewritten after every section, so a run cut short still brings back what it
measured. Later sections keep a reserve (``reserve_s``), so an overrun cannot starve them.

===============  ===========================================================================================
environment      nvidia-smi, torch / CUDA / cuDNN versions, the git commit, Pillow's WebP decoder
calibrate        ``pipeline.train.train`` -- the real training step of the preset, data included -- for a
                 few iterations: steady it/s, data vs step time -> iterations = train budget × it/s
danet            Luigi (local scheduler): TrainedModel, Evaluation (full-resolution val) and ReferenceCheck
                 (NumPy head vs torch, float64 and float32) of DANet, with those iterations
network_check    ``danet check --dtype float64``'s machinery (:func:`danet.network_check.check`): the whole
                 network in NumPy vs torch, stage by stage, on three val images
gpu_deviation    the GPU's own forward (bf16 autocast; float32 with TF32; float32 without) against the float64
                 NumPy reference, per stage, and the share of pixels whose predicted class differs
fcn              Luigi: TrainedModel and Evaluation of the dilated FCN (attention none), same iterations
report           ``OUT/report.zip``: report.html (self-contained) with the attention of three street scenes,
                 predictions of FCN and DANet, the tables; the figures as PNG files; eval.json, metrics.jsonl
bench_gpu        ``benchmarks/bench_gpu.py``: ResNet-50/101 DANet training images/s at 512×1024 and 768×768
                 (bf16, channels_last), inference frames/s at 512×1024 and 1024×2048, peak memory
===============  ===========================================================================================

``results.json`` holds each section's record, a ``sections`` table (status, seconds, limit), a
``summary`` of the headline figures and the bars of issue 16. ``--smoke`` runs the same code on
the CPU with a tiny budget: the tiny backbone, 32 × 32 crops, a few iterations, small bench sizes.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import datetime
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

PRESET = "camvid-gpu"
N_CHECK_IMAGES = 3
CALIBRATION_ITERATIONS = 25                     # the first 3 are warm-up (pipeline.train.WARMUP)
FINAL_S = 10                                    # kept for writing the last results.json
DEFAULT_BUDGET_S = 510                          # 8.5 min: one device command holds 10
BARS = {"network_float64": 1e-10, "head_float64": 1e-12, "wall_s": 540, "r50_train_512x1024_images_per_s": 100,
        "train_s": 180}
SMOKE_OVERRIDES = {"backbone": "tiny", "batch_size": 2, "crop_size": 32, "checkpoint_every": 1000, "log_every": 1}


class OutOfTime(KeyboardInterrupt):
    """Raised by a section's timer. A KeyboardInterrupt, because Luigi turns every other exception
    inside a task into a task failure and goes on; this one it lets through."""


def log(message: str) -> None:
    print(f"[campaign {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Campaign:
    """The run's settings, its results (written to ``out/results.json`` after every section) and its clock."""

    def __init__(self, args):
        from pipeline.datasets import CamVid

        self.args, self.started = args, time.monotonic()
        self.deadline = self.started + args.budget_s
        self.device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
        self.data_root = str(CamVid.find_root(args.data_root) or args.data_root)
        self.overrides = dict(SMOKE_OVERRIDES if args.smoke else {})
        if args.pretrained_backbone:
            self.overrides["pretrained_backbone"] = os.path.abspath(args.pretrained_backbone)
        os.makedirs(args.out, exist_ok=True)
        self.work = args.work or tempfile.mkdtemp(prefix="danet-gpu-campaign-")
        self.results = {"campaign": {"mode": "smoke (CPU)" if args.smoke else "gpu", "argv": sys.argv[1:],
                                     "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                                         timespec="seconds"), "budget_s": args.budget_s,
                                     "train_budget_s": args.train_budget_s, "device": self.device,
                                     "preset": PRESET, "work": self.work, "finished": False},
                        "sections": {}}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def preset(self):
        from pipeline.presets import resolve

        return resolve(PRESET, self.overrides)

    def write(self) -> None:
        from pipeline.artifacts import write_json

        self.results["campaign"]["wall_seconds"] = round(self.elapsed(), 1)
        self.results["summary"] = summarize(self.results)
        write_json(os.path.join(self.args.out, "results.json"), self.results)

    def run(self, sections) -> None:
        """Run each (name, fn, budget_s, reserve_s) in turn under its limit; record and write after each.
        Budgets and reserves are for the default campaign budget and scale with ``--budget-s``."""
        scale = self.args.budget_s / DEFAULT_BUDGET_S
        for k, (name, fn, budget_s, _) in enumerate(sections):
            budget_s = round(budget_s * scale, 1)
            reserve = sum(r for *_, r in sections[k + 1:]) * scale + FINAL_S
            limit = min(budget_s, self.deadline - time.monotonic() - reserve)
            record = {"budget_s": budget_s, "limit_s": round(limit, 1), "started_at_s": round(self.elapsed(), 1)}
            if limit < min(budget_s, 5 if self.args.smoke else 20):
                record.update(status="skipped", reason=f"{limit:.0f} s left for it of its {budget_s} s")
            else:
                record.update(self._timed(name, fn, limit))
            self.results["sections"][name] = record
            log(f"{name}: {record['status']} ({record.get('seconds', 0):.1f} s of {record['limit_s']} s)")
            self.write()

    def _timed(self, name: str, fn, limit: float) -> dict:
        def alarm(signum, frame):
            raise OutOfTime(f"section {name} passed its limit of {limit:.0f} s")

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
        t0 = time.monotonic()
        try:
            self.results[name] = fn(self)
            status = {"status": "ok"}
        except OutOfTime as err:
            status = {"status": "timed out", "error": str(err)}
        except Exception as err:                                      # recorded; the next section still runs
            status = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc().splitlines()[-12:]}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        gc.collect()                                                  # an interrupted section's tensors
        if self.device == "cuda":
            torch.cuda.empty_cache()
        return {**status, "seconds": round(time.monotonic() - t0, 2)}


# --------------------------------------------------------------------------- environment

def _command(argv, timeout=30) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        return (proc.stdout + proc.stderr).strip()
    except (OSError, subprocess.SubprocessError) as err:
        return f"{argv[0]}: {type(err).__name__}: {err}"


def git_commit(commit_file: str) -> dict:
    """The checkout's commit from git; where the tree travelled without .git, from the file the
    prepare script wrote (``.gpu/COMMIT``)."""
    head = _command(["git", "rev-parse", "HEAD"])
    if len(head) == 40 and all(c in "0123456789abcdef" for c in head):
        return {"commit": head, "dirty_files": len(_command(["git", "status", "--porcelain"]).splitlines()),
                "source": "git"}
    if os.path.isfile(commit_file):
        with open(commit_file) as f:
            return {**json.load(f), "source": commit_file}
    return {"commit": None, "source": f"neither git ({head[:80]}) nor {commit_file}"}


def environment(c: Campaign) -> dict:
    from PIL import features

    from pipeline.artifacts import environment as versions

    gpu = {}
    if c.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
               "multiprocessors": props.multi_processor_count, "capability": list(torch.cuda.get_device_capability()),
               "bf16_supported": torch.cuda.is_bf16_supported()}
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "gpu": gpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "pillow_webp": features.check("webp"),
            "git": git_commit(c.args.commit_file), "versions": versions(),
            "nvidia_smi": _command(["nvidia-smi"]) if c.device == "cuda" else "not run (no CUDA device used)"}


# --------------------------------------------------------------------------- training

def calibrate(c: Campaign) -> dict:
    """The preset's real training step for a few iterations -> iterations that fill the train budget."""
    from pipeline import build
    from pipeline.datasets import CamVid
    from pipeline.presets import validate, with_fields
    from pipeline.train import train

    base = c.preset()
    preset = with_fields(base, {"iterations": CALIBRATION_ITERATIONS if not c.args.smoke else 6})
    validate(preset)
    train_set = CamVid(c.data_root, "train")
    torch.manual_seed(0)
    model = build.build_model(preset, train_set.NUM_CLASSES, "both", "official")
    summary = train(model, train_set, preset, os.path.join(c.work, "calibrate"), device=c.device, progress=False)
    rate = summary["timing"]["steady_iterations_per_s"]
    chosen = int(c.args.train_budget_s * rate)
    chosen = max(chosen, 8) if not c.args.smoke else min(max(chosen, 4), 8)
    c.overrides["iterations"] = chosen
    log(f"calibrate: {rate:.2f} it/s × {c.args.train_budget_s} s -> {chosen} iterations "
        f"(preset default {base.iterations}, a FLOP estimate)")
    return {"iterations_run": summary["iterations"], "steady_iterations_per_s": rate,
            "images_per_s": rate * preset.batch_size, "batch_size": preset.batch_size, "timing": summary["timing"],
            "amp": summary["amp"], "chosen_iterations": chosen, "train_budget_s": c.args.train_budget_s,
            "preset_default_iterations": base.iterations, "seconds": round(summary["seconds"], 2)}


@contextlib.contextmanager
def pipeline_root(c: Campaign):
    """Luigi's ``[pipeline]`` root under the work folder, progress bars off; as it was afterwards (tests share it)."""
    import luigi

    config = luigi.configuration.get_config()
    before = {k: config.get("pipeline", k, None) for k in ("root", "progress")}
    config.set("pipeline", "root", os.path.join(c.work, "artifacts"))
    config.set("pipeline", "progress", "false")
    try:
        yield
    finally:
        for k, v in before.items():
            config.set("pipeline", k, v) if v is not None else config.remove_option("pipeline", k)


def luigi_build(tasks) -> None:
    """``luigi.build`` with the local scheduler; a failed build raises, naming the summary's last lines."""
    import luigi

    result = luigi.build(tasks, local_scheduler=True, detailed_summary=True, log_level="WARNING")
    if not result.scheduling_succeeded:
        raise RuntimeError(f"luigi build failed: {result.summary_text.strip().splitlines()[-3:]}")


def _task_args(c: Campaign) -> dict:
    if "iterations" not in c.overrides:                  # calibration failed: half the preset's FLOP estimate
        c.overrides["iterations"] = 4 if c.args.smoke else c.preset().iterations // 2
        c.results["campaign"]["iterations_without_calibration"] = c.overrides["iterations"]
    return {"dataset": "camvid", "preset": PRESET, "overrides": dict(c.overrides), "data_root": c.data_root,
            "seed": 0}


def _model_record(task) -> dict:
    from pipeline.artifacts import read_json

    d = task.model_dir()
    params, evaluation = read_json(os.path.join(d, "params.json")), read_json(os.path.join(d, "eval.json"))
    return {"model_dir": d, "train": params["train"], "train_task_seconds": params["seconds"],
            "eval": {k: evaluation[k] for k in ("miou", "pixel_accuracy", "per_class_iou", "num_images")},
            "eval_task_seconds": evaluation["seconds"], "class_names": params["class_names"]}


def train_danet(c: Campaign) -> dict:
    from pipeline.artifacts import read_json
    from pipeline.tasks import Evaluation, ReferenceCheck

    with pipeline_root(c):
        evaluation = Evaluation(**_task_args(c), attention="both")
        check = ReferenceCheck(**_task_args(c), attention="both")
        luigi_build([evaluation, check])
        parity = read_json(check.output().path)
        return {**_model_record(evaluation),
                "reference_check": {k: parity[k] for k in ("images", "feature_shape", "gamma_pam", "beta_cam",
                                                           "float64", "float32")}}


def train_fcn(c: Campaign) -> dict:
    from pipeline.tasks import Evaluation

    with pipeline_root(c):
        evaluation = Evaluation(**_task_args(c), attention="none")
        luigi_build([evaluation])
        return _model_record(evaluation)


# --------------------------------------------------------------------------- checks

def scenes(c: Campaign):
    """The val split cut to ``N_CHECK_IMAGES`` scenes spread over it (neighbouring CamVid frames look alike)."""
    from pipeline.datasets import CamVid

    val = CamVid(c.data_root, "val")
    picked = copy.copy(val)
    picked.samples = [val.samples[i] for i in sorted(set(np.linspace(0, len(val) - 1, N_CHECK_IMAGES).round()
                                                         .astype(int).tolist()))]
    return picked


def _trained_danet(c: Campaign):
    """The GPU-trained DANet as ``danet check`` loads it (:func:`danet.load_checkpoint`), and the val scenes."""
    from danet.checkpoint import load_checkpoint
    from pipeline.datasets import read_image

    if "danet" not in c.results:
        raise RuntimeError("no trained DANet: section danet did not finish")
    model, info = load_checkpoint(os.path.join(c.results["danet"]["model_dir"], "model.pt"), "project")
    return model, info, [(str(p), read_image(p)) for p, _ in scenes(c).samples]


def network_check(c: Campaign) -> dict:
    """The whole network, NumPy vs torch in float64 on the CPU, per stage, image by image; the record
    is rewritten after each image, so a section cut short keeps the images it finished."""
    from danet.cli import TOLERANCE
    from danet.network_check import check

    model, info, images = _trained_danet(c)
    per_image = []
    for path, image in images:
        result = check(model, info, image, "float64")
        per_image.append({"image": os.path.basename(path), **result})
        log(f"network_check {os.path.basename(path)}: overall {result['overall_max_rel_error']:.2e}")
        stages = _max_over_images(per_image)
        overall = max(stages.values())
        c.results["network_check"] = {
            "dtype": "float64", "images": per_image, "images_planned": len(images), "stages_max": stages,
            "overall_max_rel_error": overall, "tolerance": TOLERANCE["float64"],
            "passed": overall <= TOLERANCE["float64"]}
    return c.results["network_check"]


def _max_over_images(per_image: list) -> dict:
    """{stage: the largest error over the images' records} (each record holds ``stages``)."""
    return {s: max(r["stages"][s] for r in per_image) for s in per_image[0]["stages"]}


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 for float32 matmuls and convolutions on or off inside the block, as before afterwards.

    Through the ``allow_tf32`` flags, which torch >= 2.9 keeps in step with its newer per-operation
    ``fp32_precision`` switches. Setting only the newer ones (matmul ``"tf32"``) leaves the two out of
    step, and from then on every reader of the older flag raises "you have used mix of the legacy and
    new APIs" (torch 2.11: ``torch.backends.cuda.matmul.allow_tf32``, ``get_float32_matmul_precision``)."""
    switches = [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")]
    before = [getattr(obj, name) for obj, name in switches]
    for obj, name in switches:
        setattr(obj, name, on)
    try:
        yield
    finally:
        for (obj, name), old in zip(switches, before):
            setattr(obj, name, old)


VARIANTS = {"bf16_autocast": (torch.bfloat16, True), "float32_tf32": (None, True), "float32_ieee": (None, False)}


def gpu_deviation(c: Campaign) -> dict:
    """Each stage of the device's forward under each of :data:`VARIANTS` against the float64 NumPy
    reference: max|device − NumPy| / max|NumPy|, and the share of pixels whose argmax class differs.
    The record is rewritten after each image, so a section cut short keeps the images it finished."""
    import refimpl
    from danet.export import state_dict_to_numpy
    from danet.network_check import architecture, torch_stages
    from danet.numerics import rel_err
    from danet.preprocess import normalize

    model, info, images = _trained_danet(c)
    weights = {k: v for k, v in state_dict_to_numpy(copy.deepcopy(model).double()).items()
               if not k.startswith("auxlayer.")}
    device_model = copy.deepcopy(model).float().to(c.device).eval()
    rows = {v: [] for v in VARIANTS}
    for path, image in images:
        x = normalize(image, torch.float64)                                        # (1, 3, H0, W0)
        *_, ref = refimpl.danet_forward(x.numpy(), weights, return_stages=True, **architecture(model, info))
        ref_class = ref["fused"].argmax(1)                                          # (1, H0, W0)
        for variant, (amp_dtype, tf32_on) in VARIANTS.items():
            with tf32(tf32_on), torch.autocast(c.device, dtype=amp_dtype or torch.bfloat16,
                                               enabled=amp_dtype is not None):
                stages = torch_stages(device_model, x.float().to(c.device))
            stages = {k: v.float().cpu().numpy() for k, v in stages.items()}
            rows[variant].append({"image": os.path.basename(path),
                                  "stages": {k: rel_err(stages[k], ref[k]) for k in ref},
                                  "changed_pixel_share": float((stages["fused"].argmax(1) != ref_class).mean())})
        c.results["gpu_deviation"] = _deviation_record(c, rows, len(images))
    return c.results["gpu_deviation"]


def _deviation_record(c: Campaign, rows: dict, planned: int) -> dict:
    """gpu_deviation's record from ``rows`` ({variant: [per-image record]}) of the images done so far."""
    out = {"device": c.device, "reference": "refimpl.danet_forward, float64, on the CPU",
           "error": "max|device - NumPy| / max|NumPy| per stage, max over the images", "images_planned": planned}
    for variant, per_image in rows.items():
        stages = _max_over_images(per_image)
        out[variant] = {"stages_max": stages, "fused_max_rel": stages["fused"],
                        "changed_pixel_share": float(np.mean([r["changed_pixel_share"] for r in per_image])),
                        "images": per_image}
    return out


# --------------------------------------------------------------------------- report and benchmark

def _figure_pngs(c: Campaign, preset) -> dict:
    """{file name: PNG bytes}: PAM attention rows of DANet on three val scenes, its CAM matrix, and the
    predictions of DANet and the FCN on those scenes."""
    from pipeline.build import load_trained
    from pipeline.report import attention_figures

    val = scenes(c)
    models = {k: load_trained(os.path.join(c.results[k]["model_dir"], "model.pt"), preset, val.NUM_CLASSES, a,
                              "official") for k, a in (("danet", "both"), ("fcn", "none")) if k in c.results}
    pngs = {"predictions.png": _predictions_png(c, val, models)}
    uris, cam_uri, _, _ = attention_figures(models["danet"].cpu(), val, N_CHECK_IMAGES, False, "DANet (GPU-trained)")
    pngs.update({f"attention_{i}.png": base64.b64decode(u.split(",", 1)[1]) for i, u in enumerate(uris)})
    pngs["cam_matrix.png"] = base64.b64decode(cam_uri.split(",", 1)[1])
    return pngs


def _predictions_png(c: Campaign, val, models: dict) -> bytes:
    """Image, ground truth and each model's whole-image prediction (on the device), a row per scene."""
    import matplotlib.pyplot as plt

    from danet import figures
    from danet.classes import class_set
    from danet.prediction import predict_probs
    from pipeline.report import denormalize

    _, _, palette = class_set("camvid", val.NUM_CLASSES, None)
    titles = {"danet": "DANet", "fcn": "dilated FCN"}
    fig, axes = plt.subplots(len(val), 2 + len(models), figsize=(4 * (2 + len(models)), 3.2 * len(val)), squeeze=False)
    for r in range(len(val)):
        image, label = val[r]
        panels = [("image", denormalize(image)), ("ground truth", figures.colorize(label.numpy(), palette))]
        for k, model in models.items():
            probs = predict_probs(model.to(c.device).eval(), image[None].to(c.device))     # (1, K, H, W)
            panels.append((titles[k], figures.colorize(probs.argmax(1)[0].cpu().numpy(), palette)))
        for ax, (title, im) in zip(axes[r], panels):
            ax.imshow(im)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    return figures.png_bytes(fig)


def _html(c: Campaign, pngs: dict) -> str:
    from pipeline.report import html_img, html_table, png_uri

    s = summarize(c.results)
    names = c.results["danet"]["class_names"]
    fcn = c.results.get("fcn", {}).get("eval", {}).get("per_class_iou", {})
    danet = c.results["danet"]["eval"]["per_class_iou"]
    iou = html_table(["class", "dilated FCN", "DANet"], [[n, _fmt(fcn.get(n)), _fmt(danet.get(n))] for n in names]
                     + [["mIoU", _fmt(s["miou"].get("fcn")), _fmt(s["miou"].get("danet"))]])
    deviation = c.results.get("gpu_deviation", {})
    stages = c.results.get("network_check", {}).get("stages_max", {})
    checks = html_table(["stage", "NumPy vs torch float64 (CPU)"] + list(VARIANTS),
                        [[k, f"{v:.2e}"] + [f"{deviation[x]['stages_max'][k]:.2e}" if x in deviation else "–"
                                            for x in VARIANTS] for k, v in stages.items()])
    figs = "".join(html_img(png_uri(data), name) for name, data in pngs.items())
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>GPU-trained DANet on CamVid</title>"
            f"<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}} img{{max-width:100%}} "
            f"td,th{{border:1px solid #ccc;padding:2px 6px}} table{{border-collapse:collapse}}</style></head><body>"
            f"<h1>GPU-trained DANet on CamVid (preset {PRESET}, {c.results['campaign']['mode']})</h1>"
            f"<h2>Summary</h2><pre>{json.dumps(s, indent=1)}</pre><h2>Val IoU per class</h2>{iou}"
            f"<h2>Max relative error per stage, over {N_CHECK_IMAGES} val images, against the float64 NumPy "
            f"reference</h2>{checks}<h2>Figures</h2>{figs}</body></html>")


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def report(c: Campaign) -> dict:
    """``OUT/report.zip``: report.html, the figures as PNGs, and each model's eval.json and metrics.jsonl."""
    from pipeline.artifacts import atomic_path

    if "danet" not in c.results:
        raise RuntimeError("no trained DANet: section danet did not finish")
    pngs = _figure_pngs(c, c.preset())
    path = os.path.join(c.args.out, "report.zip")
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("report.html", _html(c, pngs))
        for name, data in pngs.items():
            z.writestr(f"figures/{name}", data)
        for model in ("danet", "fcn"):
            if model in c.results:
                for name in ("eval.json", "metrics.jsonl", "params.json"):
                    z.write(os.path.join(c.results[model]["model_dir"], name), f"{model}/{name}")
    return {"file": "report.zip", "bytes": os.path.getsize(path), "figures": sorted(pngs)}


def bench_gpu(c: Campaign) -> dict:
    from benchmarks import bench_gpu as bench
    from pipeline.artifacts import read_json

    path = os.path.join(c.work, "bench_gpu.json")
    if c.device == "cuda":
        argv = ["--backbones", "resnet50,resnet101", "--batch", "8", "--train-sizes", "512x1024,768x768",
                "--sizes", "512x1024,1024x2048", "--iters", "10", "--warmup", "3", "--channels-last"]
    else:
        argv = ["--device", "cpu", "--backbones", "tiny", "--batch", "1", "--train-sizes", "32x64,32x32",
                "--sizes", "32x64", "--iters", "1", "--warmup", "0"]
    if os.path.exists(path):
        os.remove(path)                                               # a --work folder used before
    try:
        rc = bench.main(argv + ["--json", path])
    finally:                                                          # rewritten after each row: a run cut
        if os.path.exists(path):                                      # short keeps the rows it measured
            c.results["bench_gpu"] = {"argv": argv, **read_json(path)}
    if rc != 0:
        errors = [f"{r['backbone']} {r['task']} {r['size']}: {r['error']}" for r in c.results["bench_gpu"]["rows"]
                  if "error" in r]
        raise RuntimeError(f"bench_gpu {' '.join(argv)} exited {rc}: {errors}")
    return c.results["bench_gpu"]


# --------------------------------------------------------------------------- summary

def summarize(r: dict) -> dict:
    """The headline figures of whatever sections have finished, and issue 16's bars (None: not measured)."""
    danet, fcn = r.get("danet", {}), r.get("fcn", {})
    miou = {k: m["eval"]["miou"] for k, m in (("danet", danet), ("fcn", fcn)) if m}
    parity = danet.get("reference_check", {})
    head64 = max((e["max_rel"] for e in [parity["float64"]["pam"], parity["float64"]["cam"],
                                         *parity["float64"]["head"].values()]), default=None) if parity else None
    rows = r.get("bench_gpu", {}).get("rows", [])
    r50 = next((x for x in rows if x["task"] == "train" and x["backbone"] == "resnet50"
                and x["size"] == [512, 1024] and "images_per_s" in x), None)
    network = r.get("network_check", {}).get("overall_max_rel_error")
    wall = r.get("campaign", {}).get("wall_seconds")
    train_s = {k: m["train"]["seconds"] for k, m in (("danet", danet), ("fcn", fcn)) if m}
    return {
        "miou": miou, "danet_minus_fcn_miou": miou["danet"] - miou["fcn"] if len(miou) == 2 else None,
        "iterations": r.get("calibrate", {}).get("chosen_iterations"),
        "measured_iterations_per_s": r.get("calibrate", {}).get("steady_iterations_per_s"),
        "train_seconds": train_s,
        "data_share_of_training_time": {k: m["train"]["timing"]["data_share"]
                                        for k, m in (("danet", danet), ("fcn", fcn)) if m},
        "head_reference_check_float64_max_rel": head64,
        "network_check_float64_max_rel": network,
        "gpu_vs_numpy_fused_max_rel": {k: v["fused_max_rel"] for k, v in r.get("gpu_deviation", {}).items()
                                       if isinstance(v, dict) and "fused_max_rel" in v},
        "gpu_changed_pixel_share": {k: v["changed_pixel_share"] for k, v in r.get("gpu_deviation", {}).items()
                                    if isinstance(v, dict) and "changed_pixel_share" in v},
        "bench_rows": [{k: x.get(k) for k in ("task", "backbone", "size", "images_per_s", "frames_per_s",
                                              "tflop_per_s", "peak_gib", "error") if k in x} for x in rows],
        "bars": {"network_check_float64_le_1e-10": None if network is None else network <= BARS["network_float64"],
                 "head_check_float64_le_1e-12": None if head64 is None else head64 <= BARS["head_float64"],
                 "campaign_wall_le_540_s": None if wall is None else wall <= BARS["wall_s"],
                 "fcn_and_danet_each_train_le_180_s": None if len(train_s) < 2 else
                 max(train_s.values()) <= BARS["train_s"],
                 "r50_train_512x1024_ge_100_images_per_s": None if r50 is None else
                 r50["images_per_s"] >= BARS["r50_train_512x1024_images_per_s"]},
    }


SECTIONS = [  # name, function, budget (s), reserve kept for it while earlier sections run (s)
    ("environment", environment, 30, 5), ("calibrate", calibrate, 60, 20), ("danet", train_danet, 240, 60),
    ("network_check", network_check, 60, 20), ("gpu_deviation", gpu_deviation, 45, 15),
    ("fcn", train_fcn, 200, 60), ("report", report, 45, 15), ("bench_gpu", bench_gpu, 120, 60)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, help="CamVid data root (the packed copy: pipeline.pack_camvid)")
    ap.add_argument("--out", required=True, help="folder for results.json and report.zip")
    ap.add_argument("--budget-s", type=float, default=None,
                    help=f"the whole campaign's time (default {DEFAULT_BUDGET_S}; smoke 300); section budgets scale with it")
    ap.add_argument("--train-budget-s", type=float, default=None, help="training time per model (default 120; smoke 2)")
    ap.add_argument("--pretrained-backbone", default=None, help="a torchvision ResNet-50 state_dict file")
    ap.add_argument("--work", default=None, help="folder for checkpoints and artifacts (default: a new temp folder)")
    ap.add_argument("--commit-file", default=os.path.join(ROOT, ".gpu", "COMMIT"))
    ap.add_argument("--smoke", action="store_true", help="the same code path on the CPU with a tiny budget")
    args = ap.parse_args(argv)
    args.budget_s = args.budget_s or (300 if args.smoke else DEFAULT_BUDGET_S)
    args.train_budget_s = args.train_budget_s or (2 if args.smoke else 120)
    if not os.path.isdir(args.data_root):
        ap.error(f"--data-root {args.data_root!r} is not a folder")
    if not args.smoke and not torch.cuda.is_available():
        ap.error("no CUDA device: run on a GPU machine, or pass --smoke for the CPU smoke run")
    campaign = Campaign(args)
    log(f"{campaign.results['campaign']['mode']} campaign, budget {args.budget_s:.0f} s, out {args.out}")
    campaign.run(SECTIONS)
    campaign.results["campaign"]["finished"] = True
    campaign.write()
    statuses = {k: v["status"] for k, v in campaign.results["sections"].items()}
    log(f"done in {campaign.elapsed():.0f} s: {statuses}")
    return 0 if all(s == "ok" for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
