"""Luigi tasks, one per artifact: dataset → trained model → evaluation → NumPy weights →
reference check → ablation → report.

Every output lives under ``[pipeline] root`` (luigi.cfg; default ``artifacts``), at a path that
encodes the parameters that change it (dataset, preset, seed, attention, CAM variant) and
``CODE_VERSION``, which is bumped when a change of code changes results. Every write is atomic,
so a crash never leaves an output that looks complete; each artifact has ``params.json`` beside it
(parameters, versions, seed, timings).
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import luigi
import numpy as np
import torch

CODE_VERSION = "v1"
ATTENTIONS = ("none", "pam", "cam", "both")
logger = logging.getLogger("luigi-interface")


class pipeline(luigi.Config):  # noqa: N801 -- luigi maps the class name to the [pipeline] section
    root = luigi.Parameter(default="artifacts", description="directory under which every artifact is written")
    progress = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                   description="show progress bars (true|false)")


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "luigi": luigi.__version__ if hasattr(luigi, "__version__") else "unknown",
            "platform": platform.platform(), "device": _device_name(),
            "torch_threads": torch.get_num_threads()}


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"


def write_json_atomic(target: luigi.LocalTarget | str, obj) -> None:
    """Write JSON through a temporary file renamed into place."""
    if isinstance(target, str):
        target = luigi.LocalTarget(target)
    with target.open("w") as f:
        json.dump(obj, f, indent=2, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(target) -> dict:
    with (target.open("r") if hasattr(target, "open") else open(target)) as f:
        return json.load(f)


def exclusive(run):
    """Run a task's ``run`` under an exclusive file lock on its task id, and skip the work if,
    once the lock is held, the output is already complete: two pipelines started at once on the
    same root then build each artifact once, and the second one waits and reuses it."""

    @functools.wraps(run)
    def wrapper(self):
        lock_dir = os.path.join(self.root, CODE_VERSION, ".locks")
        os.makedirs(lock_dir, exist_ok=True)
        with open(os.path.join(lock_dir, f"{self.task_id}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.complete():
                logger.info("%s was completed by another process meanwhile; nothing to do", self.task_id)
                return
            return run(self)

    return wrapper


class _Base(luigi.Task):
    dataset = luigi.Parameter(default="synthetic", description="synthetic | camvid | voc2012 | cityscapes | ade20k")
    preset = luigi.Parameter(default="cpu", description="cpu | smoke | cityscapes | voc")
    data_root = luigi.Parameter(default="", description="an existing copy of the dataset (default: download under root)")

    @property
    def root(self) -> str:
        return pipeline().root

    def get_preset(self):
        from pipeline.presets import get_preset, validate

        preset = get_preset(self.preset)
        validate(preset)  # structural checks, before any work; image sizes are checked before training
        return preset

    def params_record(self, started: float, **extra) -> dict:
        return {"task": self.task_family, "params": self.param_kwargs, "code_version": CODE_VERSION,
                "preset": self.get_preset().as_dict(), "environment": environment(),
                "seconds": round(time.time() - started, 3), **extra}


class PreparedDataset(_Base):
    """The dataset on disk, generated (synthetic) or downloaded, verified, with its splits.

    Output: ``<root>/<CODE_VERSION>/data/<dataset>[-<preset>]/dataset.json``.
    """

    def requires(self):
        return []

    def output(self):
        name = f"{self.dataset}-{self.preset}" if self.dataset == "synthetic" else self.dataset
        return luigi.LocalTarget(os.path.join(self.root, CODE_VERSION, "data", name, "dataset.json"))

    @exclusive
    def run(self):
        from pipeline import datasets, synthetic

        started = time.time()
        out_dir = os.path.dirname(self.output().path)
        os.makedirs(os.path.dirname(out_dir), exist_ok=True)
        if self.dataset == "synthetic":
            params = {"n_train": 400, "n_val": 100, **self.get_preset().synthetic}
            tmp = tempfile.mkdtemp(prefix=".tmp-synthetic-", dir=os.path.dirname(out_dir))
            try:
                synthetic.generate(tmp, **params, progress=pipeline().progress)
                if os.path.exists(out_dir):
                    shutil.rmtree(out_dir)
                os.replace(tmp, out_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            data_dir, cls = out_dir, synthetic.KeyedShapes
        else:
            if self.dataset not in datasets.DATASETS:
                raise ValueError(f"unknown dataset {self.dataset!r}; choose synthetic or one of {sorted(datasets.DATASETS)}")
            cls = datasets.DATASETS[self.dataset]
            data_dir = str(datasets.prepare(self.dataset, self.data_root or os.path.join(out_dir, "raw"),
                                            progress=pipeline().progress))
        counts = {split: cls(data_dir, split).verify() for split in ("train", "val")}
        sizes = sorted({_image_size(p) for p, _ in cls(data_dir, "train").samples})
        write_json_atomic(self.output(), {"dataset": self.dataset, "data_dir": os.path.abspath(data_dir),
                                          "num_classes": cls.NUM_CLASSES, "class_names": list(cls.CLASS_NAMES),
                                          "counts": counts, "train_image_sizes": sizes[:1000],
                                          **self.params_record(started)})


def _image_size(path) -> tuple[int, int]:
    """(H, W) from the image header, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as img:
        return img.height, img.width


def load_dataset(record: dict, split: str):
    """The Dataset object described by a PreparedDataset's dataset.json."""
    from pipeline import datasets, synthetic

    cls = synthetic.KeyedShapes if record["dataset"] == "synthetic" else datasets.DATASETS[record["dataset"]]
    return cls(record["data_dir"], split)


class _ModelTask(_Base):
    seed = luigi.IntParameter(default=0)
    attention = luigi.ChoiceParameter(choices=ATTENTIONS, default="both")
    cam_variant = luigi.ChoiceParameter(choices=("official", "paper"), default="official")
    # used by TrainedModel only (see there); declared here so that every model task accepts a
    # TrainedModel's param_kwargs (report.py builds Evaluation(**trained.param_kwargs))
    nproc = luigi.IntParameter(default=1, significant=False,
                               description="TrainedModel: training processes (torchrun; > 1 trains data-parallel)")

    def model_dir(self) -> str:
        return os.path.join(self.root, CODE_VERSION, "runs", self.dataset, self.preset, f"seed{self.seed}",
                            f"{self.attention}-{self.cam_variant}")

    def model_params(self) -> dict:
        return {"dataset": self.dataset, "preset": self.preset, "data_root": self.data_root, "seed": self.seed,
                "attention": self.attention, "cam_variant": self.cam_variant}


def build_model(preset, num_classes: int, attention: str, cam_variant: str, pretrained: bool = True):
    from danet import DANet

    model = DANet(num_classes, backbone=preset.backbone, output_stride=preset.output_stride,
                  multi_grid=preset.multi_grid, attention=attention, cam_variant=cam_variant,
                  pretrained_backbone=preset.pretrained_backbone if pretrained else None, dilated=preset.dilated)
    if preset.sync_bn and torch.distributed.is_available() and torch.distributed.is_initialized():
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def load_trained(task: _ModelTask, record: dict):
    """The trained model of ``task`` (a TrainedModel output), in eval mode on the CPU."""
    model = build_model(task.get_preset(), record["num_classes"], task.attention, task.cam_variant, pretrained=False)
    state = torch.load(os.path.join(task.model_dir(), "model.pt"), map_location="cpu", weights_only=True)
    from danet import load_state_dict_strict

    load_state_dict_strict(model, state, where=f"checkpoint {task.model_dir()}/model.pt")
    return model.eval()


class TrainedModel(_ModelTask):
    """A trained DANet (or ablation): ``model.pt`` (state_dict), ``metrics.jsonl``, ``params.json``.

    ``nproc`` > 1 trains data-parallel in that many processes (``torch.distributed.run`` of
    ``pipeline.distributed``; one per GPU, or CPU shares). It is *insignificant*: not in the task id
    nor the output path, because the recipe -- global batch, samples, schedule -- is the same, so a
    model trained either way answers the same request. The numbers are not bitwise the same (float
    reduction order; plain BatchNorm normalises each process's share of the batch; per-process
    dropout), and ``params.json`` records ``nproc`` and the world size, so the difference is traceable.
    """

    def requires(self):
        return PreparedDataset(dataset=self.dataset, preset=self.preset, data_root=self.data_root)

    def output(self):
        return luigi.LocalTarget(os.path.join(self.model_dir(), "params.json"))

    def _train_distributed(self, record: dict, work: str) -> dict:
        """``torchrun --standalone --nproc_per_node=nproc -m pipeline.distributed ...``; its summary."""
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
               "-m", "pipeline.distributed", "--dataset", record["dataset"], "--dataset-dir", record["data_dir"],
               "--preset", self.preset, "--attention", self.attention, "--cam-variant", self.cam_variant,
               "--seed", str(self.seed), "--out", os.path.abspath(work)]
        if not pipeline().progress:
            cmd.append("--no-progress")
        project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")]))}
        logger.info("%s: %s", self.task_id, " ".join(cmd))
        rc = subprocess.run(cmd, env=env).returncode
        if rc != 0:
            raise RuntimeError(f"distributed training ({self.nproc} processes) exited with code {rc}; "
                               f"its output is above; rerunning resumes from the last checkpoint in {work}")
        return read_json(os.path.join(work, "summary.json"))

    @exclusive
    def run(self):
        from pipeline.presets import validate
        from pipeline.train import latest_checkpoint, train

        started = time.time()
        record = read_json(self.input())
        preset = self.get_preset()
        validate(preset, record.get("train_image_sizes"))
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        work = os.path.join(self.model_dir(), "work")
        if self.nproc > 1:
            summary = self._train_distributed(record, work)
            model = build_model(preset, record["num_classes"], self.attention, self.cam_variant, pretrained=False)
            model.load_state_dict(latest_checkpoint(work)[1]["model"])
        else:
            model = build_model(preset, record["num_classes"], self.attention, self.cam_variant)
            summary = train(model, load_dataset(record, "train"), preset, work, seed=self.seed,
                            progress=pipeline().progress)
        final = os.path.join(self.model_dir(), "model.pt")
        tmp = final + ".tmp"
        torch.save(getattr(model, "module", model).cpu().state_dict(), tmp)
        os.replace(tmp, final)
        shutil.copyfile(os.path.join(work, "metrics.jsonl"), os.path.join(self.model_dir(), "metrics.jsonl"))
        write_json_atomic(self.output(), {"num_classes": record["num_classes"], "class_names": record["class_names"],
                                          "train": summary, **self.params_record(started)})


class Evaluation(_ModelTask):
    """Metrics of a trained model on the val split: ``eval.json`` and a few ``predictions.npz``."""

    def requires(self):
        return TrainedModel(**self.model_params())

    def output(self):
        return luigi.LocalTarget(os.path.join(self.model_dir(), "eval.json"))

    @exclusive
    def run(self):
        from pipeline.evaluate import evaluate

        started = time.time()
        record = read_json(self.input())
        model = load_trained(self, record)
        data = read_json(self.requires().requires().output())
        result = evaluate(model, load_dataset(data, "val"), self.get_preset(), progress=pipeline().progress,
                          keep_predictions=6)
        preds = np.stack(result.pop("predictions")) if result.get("predictions") else np.zeros((0,), np.uint8)
        pred_target = luigi.LocalTarget(os.path.join(self.model_dir(), "predictions.npz"))
        with pred_target.temporary_path() as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, predictions=preds)
        write_json_atomic(self.output(), {**result, **self.params_record(started)})


class NumpyWeights(_ModelTask):
    """The trained head's state_dict as ``head.npz`` for ``refimpl`` (float32, as trained)."""

    def requires(self):
        return TrainedModel(**self.model_params())

    def output(self):
        return luigi.LocalTarget(os.path.join(self.model_dir(), "head.npz"))

    @exclusive
    def run(self):
        from danet import export_npz

        model = load_trained(self, read_json(self.input()))
        export_npz(model.head, self.output().path)  # atomic: temporary file renamed into place


class ReferenceCheck(_ModelTask):
    """``refimpl`` vs torch on the *trained* model's real features: PAM, CAM and the whole head.

    Output ``parity.json``: max absolute and relative (normwise) error, float64 and float32.
    """

    def requires(self):
        return {"model": TrainedModel(**self.model_params()), "weights": NumpyWeights(**self.model_params())}

    def output(self):
        return luigi.LocalTarget(os.path.join(self.model_dir(), "parity.json"))

    @exclusive
    def run(self):
        from pipeline.parity import reference_check

        if self.attention != "both":
            raise ValueError(f"ReferenceCheck needs attention='both' (the full head), got {self.attention!r}")
        started = time.time()
        record = read_json(self.input()["model"])
        model = load_trained(self, record)
        data = read_json(self.requires()["model"].requires().output())
        result = reference_check(model, self.input()["weights"].path, load_dataset(data, "val"),
                                 cam_variant=self.cam_variant)
        write_json_atomic(self.output(), {**result, **self.params_record(started)})


class Ablation(_Base):
    """The paper's ablation on this dataset: FCN (none), PAM only, CAM only, both → ``ablation.json``."""

    seed = luigi.IntParameter(default=0)

    def requires(self):
        return {a: Evaluation(dataset=self.dataset, preset=self.preset, data_root=self.data_root, seed=self.seed,
                              attention=a) for a in ATTENTIONS}

    def output(self):
        return luigi.LocalTarget(os.path.join(self.root, CODE_VERSION, "runs", self.dataset, self.preset,
                                              f"seed{self.seed}", "ablation.json"))

    @exclusive
    def run(self):
        started = time.time()
        rows = {a: {k: v for k, v in read_json(t).items() if k in ("miou", "pixel_accuracy", "per_class_iou")}
                for a, t in self.input().items()}
        write_json_atomic(self.output(), {"ablation": rows, **self.params_record(started)})


class FullReport(_Base):
    """Everything: ``report.html`` (self-contained) and ``report.json`` under ``<root>/<v>/reports/``."""

    seed = luigi.IntParameter(default=0)

    def requires(self):
        common = dict(dataset=self.dataset, preset=self.preset, data_root=self.data_root, seed=self.seed)
        return {"ablation": Ablation(**common),
                "parity": ReferenceCheck(**common, attention="both"),
                "both": TrainedModel(**common, attention="both"),
                "data": PreparedDataset(dataset=self.dataset, preset=self.preset, data_root=self.data_root)}

    def output(self):
        d = os.path.join(self.root, CODE_VERSION, "reports", f"{self.dataset}-{self.preset}-seed{self.seed}")
        return {"html": luigi.LocalTarget(os.path.join(d, "report.html")),
                "json": luigi.LocalTarget(os.path.join(d, "report.json"))}

    @exclusive
    def run(self):
        from pipeline.report import build_report

        started = time.time()
        html, summary = build_report(self)
        summary["report_seconds"] = round(time.time() - started, 3)
        # json first, html last: the html is what a person opens, and it appears only when both are complete
        write_json_atomic(self.output()["json"], summary)
        with self.output()["html"].open("w") as f:
            f.write(html)
