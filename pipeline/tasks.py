"""Luigi tasks, one per artifact: dataset → trained model → evaluation → NumPy weights →
reference check → ablation → report.

Each task reads its inputs through ``self.input()``, writes its outputs through ``self.output()``
(atomically, :mod:`pipeline.artifacts`) and keeps ``run`` short: the work is in ``build``,
``train``, ``evaluate``, ``parity`` and ``report``, which know nothing of Luigi. Paths encode every
parameter that changes a result (:mod:`pipeline.artifacts`); each artifact has its parameters,
versions, seed and timing beside it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import time

import luigi
import numpy as np
import torch

from danet.attention import CAM_VARIANTS
from danet.checkpoint import FORMATS, file_sha256
from danet.classes import CLASS_NAMES
from danet.head import ATTENTIONS
from pipeline import artifacts, build, command_line, datasets
from pipeline.artifacts import CODE_VERSION, atomic_path, read_json, write_json
from pipeline.presets import PRESETS, preset_for

logger = logging.getLogger("luigi-interface")
SCHEDULER_FLAGS = ("--scheduler-host", "--scheduler-port", "--scheduler-url")
SCHEDULER_OPTIONS = ("default-scheduler-host", "default-scheduler-port", "default-scheduler-url")


def use_local_scheduler_unless_one_is_named(argv=None) -> bool:
    """Make ``luigi --module pipeline FullReport`` work as typed, without a luigid.

    Luigi's command line talks to a central scheduler at localhost:8082 unless given
    ``--local-scheduler``. Here the in-process scheduler is the default instead, unless a scheduler is
    named: ``--scheduler-host``/``--scheduler-port``/``--scheduler-url`` on the command line, or
    ``default-scheduler-host``/``-port``/``-url`` in the ``[core]`` section of luigi.cfg. Called when
    the task module is imported, which luigi's command line does before it reads ``[core]``.
    Returns whether the local scheduler was chosen.
    """
    argv = sys.argv[1:] if argv is None else argv
    config = luigi.configuration.get_config()
    named = any(a.split("=")[0] in SCHEDULER_FLAGS for a in argv) or any(
        config.has_option("core", option) for option in SCHEDULER_OPTIONS)
    if not named:
        config.set("core", "local_scheduler", "true")
    return not named


class PipelineConfig(luigi.Config):
    """The ``[pipeline]`` section of luigi.cfg (``--pipeline-root``, ``--pipeline-progress`` on the command line)."""

    root = luigi.Parameter(default="artifacts", description="directory under which every artifact is written")
    progress = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                   description="show progress bars (true|false)")

    @classmethod
    def get_task_family(cls):
        return "pipeline"


def lock_name(task) -> str:
    """The lock of a task: a hash of its output paths, not of its parameters -- two tasks whose
    parameters differ but whose outputs are the same files (a default written out) take one lock."""
    paths = sorted(os.path.abspath(t.path) for t in luigi.task.flatten(task.output()))
    return f"{task.task_family}-" + hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]


def exclusive(run):
    """Run ``run`` under an exclusive lock on its output paths (:func:`lock_name`), remove the
    temporaries that a killed writer left in its output folders, and skip the work if, once the
    lock is held, the output is complete: two pipelines started at once on one root build each
    artifact once, and the second reuses it."""

    @functools.wraps(run)
    def wrapper(self):
        with artifacts.exclusive_lock(self.root, lock_name(self)):
            for folder in {os.path.dirname(t.path) for t in luigi.task.flatten(self.output())}:
                for path in artifacts.remove_stale_temporaries(folder):
                    logger.info("removed %s, left by a writer that died", path)
            if self.complete():
                logger.info("%s was completed by another process meanwhile; nothing to do", self.task_id)
                return
            return run(self)

    return wrapper


class _Base(luigi.Task):
    dataset = luigi.Parameter(default="synthetic", description=" | ".join(datasets.DATASETS))
    preset = luigi.Parameter(default="", description=" | ".join(PRESETS) + "; default: the dataset's own "
                             "(synthetic: cpu, camvid: camvid, cityscapes, voc2012 and voc2012aug: voc)")
    overrides = command_line.json_dict_parameter("--overrides", '\'{"iterations": 3000}\'', default={},
                                                 description='preset fields to change, as JSON: \'{"iterations": 3000}\'')
    preset_file = luigi.Parameter(default="", description="a TOML file of preset fields (and base = <preset>)")
    data_root = luigi.Parameter(default="", description="an existing copy of the dataset (default: download under root)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # every parameter is checked here, when the command line is read: before any task runs
        datasets.dataset_class(self.dataset)
        self.get_preset()
        if getattr(self, "seed", 0) < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.data_root and self.dataset == "synthetic":
            raise ValueError(f"--data-root {self.data_root!r}: dataset 'synthetic' is generated, it reads no "
                             f"--data-root; name the dataset that lives there (--dataset camvid, ...)")
        if self.data_root:
            build.check_data_root(self.dataset, self.data_root)

    @classmethod
    def get_param_values(cls, params, args, kwargs):
        """Luigi's parameter values, with an empty ``preset`` made the dataset's own
        (:func:`pipeline.presets.preset_for`) -- before the task's id is computed, so ``--dataset camvid``
        and ``--dataset camvid --preset camvid`` are one task (the built-in cpu preset trained CamVid). A
        dataset without a preset of its own keeps it empty under a ``--preset-file``, whose ``base`` names it."""
        values = super().get_param_values(params, args, kwargs)
        given = dict(values)
        if not given["preset"]:
            datasets.dataset_class(given["dataset"])                 # a typo is named as such first
            own = preset_for(given["dataset"], preset_file=given["preset_file"])
            values = [(k, own if k == "preset" else v) for k, v in values]
        return values

    @property
    def root(self) -> str:
        return PipelineConfig().root

    @property
    def progress(self) -> bool:
        return PipelineConfig().progress

    def get_preset(self):
        """The effective preset (built-in, preset file, overrides), structurally validated."""
        from pipeline.presets import resolve, validate

        overrides = json.loads(json.dumps(self.overrides, default=dict))  # luigi's frozen dict -> plain JSON values
        preset = resolve(self.preset, overrides, self.preset_file or None)
        validate(preset)  # image sizes are checked against the data before training
        return preset

    def keys(self) -> tuple[str, str]:
        """(dataset, preset) as they appear in output paths: a ``--data-root`` copy adds a hash of its
        absolute path (two copies never share results), a changed preset a hash of all its fields."""
        from pipeline.presets import preset_key

        dataset = self.dataset
        if self.data_root and self.dataset != "synthetic":
            dataset += "-" + hashlib.sha256(os.path.abspath(self.data_root).encode()).hexdigest()[:8]
        return dataset, preset_key(self.get_preset())

    def common(self) -> dict:
        """The parameters every task of one pipeline shares."""
        return {"dataset": self.dataset, "preset": self.preset, "overrides": self.overrides,
                "preset_file": self.preset_file, "data_root": self.data_root}

    def record(self, started: float, **extra) -> dict:
        """What is kept beside each artifact: parameters, code version, effective preset, environment, seconds."""
        return {"task": self.task_family, "params": json.loads(json.dumps(self.param_kwargs, default=dict)),
                "code_version": CODE_VERSION, "preset": self.get_preset().as_dict(),
                "environment": artifacts.environment(), "seconds": round(time.time() - started, 3), **extra}

    def _data(self):
        return PreparedDataset(**self.common())

    def report_progress(self, what: str):
        """A callback for long work: percentage and a status line (loss, ETA) shown by the luigid visualiser."""
        def report(done: int, total: int, loss, eta_s: float) -> None:
            self.set_progress_percentage(round(100 * done / total, 1))
            self.set_status_message(f"{what} {done}/{total}" + ("" if loss is None else f", loss {loss:.4f}")
                                    + f", ETA {eta_s:.0f} s")
        return report


class PreparedDataset(_Base):
    """The dataset on disk, generated (synthetic) or downloaded, verified, with its splits.

    Output: ``<root>/<v>/data/<dataset>[-<preset>]/dataset.json``.
    """

    def requires(self):
        return []

    def output(self):
        return luigi.LocalTarget(os.path.join(artifacts.data_dir(self.root, *self.keys()), "dataset.json"))

    @exclusive
    def run(self):
        started = time.time()
        record = build.prepare_dataset(self.dataset, self.get_preset(), os.path.dirname(self.output().path),
                                       self.data_root, progress=self.progress)
        write_json(self.output().path, {**record, **self.record(started)})


class _ModelTask(_Base):
    seed = luigi.IntParameter(default=0)
    attention = luigi.ChoiceParameter(choices=ATTENTIONS, default="both")
    cam_variant = luigi.ChoiceParameter(choices=CAM_VARIANTS, default="official")

    def model_dir(self) -> str:
        return artifacts.model_dir(self.root, *self.keys(), self.seed, self.attention, self.cam_variant)

    def model_params(self) -> dict:
        return {**self.common(), "seed": self.seed, "attention": self.attention, "cam_variant": self.cam_variant}

    def load_model(self, trained: luigi.LocalTarget):
        """The model a TrainedModel output (its params.json) describes, in eval mode on the CPU."""
        record = read_json(trained)
        return build.load_trained(os.path.join(os.path.dirname(trained.path), "model.pt"), self.get_preset(),
                                  record["num_classes"], self.attention, self.cam_variant)


class TrainedModel(_ModelTask):
    """A trained DANet (or ablation): ``model.pt`` (state_dict), ``metrics.jsonl``, ``params.json``.

    ``nproc`` > 1 trains data-parallel in that many processes (``torch.distributed.run`` of
    ``pipeline.distributed``; one per GPU, or CPU shares). It is *insignificant*: not in the task id
    nor the output path, because the recipe -- global batch, samples, schedule -- is the same, so a
    model trained either way answers the same request. The numbers are not bitwise the same (float
    reduction order; plain BatchNorm normalises each process's share of the batch; per-process
    dropout), and ``params.json`` records ``nproc`` and the world size, so the difference is traceable.
    """

    nproc = luigi.IntParameter(default=1, significant=False,
                               description="training processes (torchrun; > 1 trains data-parallel)")

    def requires(self):
        return self._data()

    def output(self):
        return luigi.LocalTarget(os.path.join(self.model_dir(), "params.json"))

    @exclusive
    def run(self):
        from pipeline.distributed import launch
        from pipeline.presets import validate
        from pipeline.train import latest_checkpoint, train

        started = time.time()
        data = build.read_dataset(self.input())
        preset = self.get_preset()
        validate(preset, data.get("train_image_sizes"))
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        work = os.path.join(self.model_dir(), "work")
        model = build.build_model(preset, data["num_classes"], self.attention, self.cam_variant,
                                  pretrained=self.nproc == 1)
        if self.nproc > 1:
            summary = launch(self.nproc, dataset=data["dataset"], dataset_dir=data["data_dir"], preset=preset,
                             attention=self.attention, cam_variant=self.cam_variant, seed=self.seed, out=work,
                             progress=self.progress)
            model.load_state_dict(latest_checkpoint(work)[1]["model"])
        else:
            summary = train(model, build.load_dataset(data, "train"), preset, work, seed=self.seed,
                            progress=self.progress, on_progress=self.report_progress("iteration"))
        model_pt = os.path.join(self.model_dir(), "model.pt")
        build.save_model(model, model_pt)
        with atomic_path(os.path.join(self.model_dir(), "metrics.jsonl")) as tmp:
            shutil.copyfile(os.path.join(work, "metrics.jsonl"), tmp)
        # model_sha256 ties the record to its model.pt: danet.load_checkpoint refuses another file in its place
        write_json(self.output().path, {"num_classes": data["num_classes"], "class_names": data["class_names"],
                                        "model_sha256": file_sha256(model_pt), "train": summary,
                                        **self.record(started)})


class Evaluation(_ModelTask):
    """Metrics of a trained model on the val split: ``eval.json`` and a few ``predictions.npz``."""

    def requires(self):
        return {"model": TrainedModel(**self.model_params()), "data": self._data()}

    def output(self):
        return luigi.LocalTarget(os.path.join(self.model_dir(), "eval.json"))

    @exclusive
    def run(self):
        from pipeline.evaluate import evaluate

        started = time.time()
        val = build.load_dataset(build.read_dataset(self.input()["data"]), "val")
        result = evaluate(self.load_model(self.input()["model"]), val,
                          self.get_preset(), progress=self.progress, keep_predictions=6,
                          on_progress=self.report_progress("image"))
        predictions = result.pop("predictions")
        with atomic_path(os.path.join(self.model_dir(), "predictions.npz")) as tmp, open(tmp, "wb") as f:
            np.savez(f, predictions=np.stack(predictions) if predictions else np.zeros((0,), np.uint8))
        write_json(self.output().path, {**result, **self.record(started)})


class NumpyWeights(_ModelTask):
    """The trained head's state_dict as ``head.npz`` for ``refimpl`` (float32, as trained)."""

    def requires(self):
        return TrainedModel(**self.model_params())

    def output(self):
        return luigi.LocalTarget(os.path.join(self.model_dir(), "head.npz"))

    @exclusive
    def run(self):
        from danet import export_npz

        export_npz(self.load_model(self.input()).head, self.output().path)  # danet's own atomic write


class ReferenceCheck(_ModelTask):
    """``refimpl`` vs torch on the *trained* model's real features: PAM, CAM and the whole head.

    Output ``parity.json``: max absolute and relative (normwise) error, float64 and float32.
    """

    def requires(self):
        return {"model": TrainedModel(**self.model_params()), "weights": NumpyWeights(**self.model_params()),
                "data": self._data()}

    def output(self):
        return luigi.LocalTarget(os.path.join(self.model_dir(), "parity.json"))

    @exclusive
    def run(self):
        from pipeline.parity import reference_check

        if self.attention != "both":
            raise ValueError(f"ReferenceCheck needs attention='both' (the full head), got {self.attention!r}")
        started = time.time()
        result = reference_check(self.load_model(self.input()["model"]), self.input()["weights"].path,
                                 build.load_dataset(build.read_dataset(self.input()["data"]), "val"),
                                 cam_variant=self.cam_variant)
        write_json(self.output().path, {**result, **self.record(started)})


class Ablation(_Base):
    """The paper's ablation on this dataset: FCN (none), PAM only, CAM only, both → ``ablation.json``."""

    seed = luigi.IntParameter(default=0)

    def requires(self):
        return {a: Evaluation(**self.common(), seed=self.seed, attention=a) for a in ATTENTIONS}

    def output(self):
        return luigi.LocalTarget(os.path.join(artifacts.seed_dir(self.root, *self.keys(), self.seed),
                                              "ablation.json"))

    @exclusive
    def run(self):
        started = time.time()
        rows = {a: {k: v for k, v in read_json(t).items() if k in ("miou", "pixel_accuracy", "per_class_iou")}
                for a, t in self.input().items()}
        write_json(self.output().path, {"ablation": rows, **self.record(started)})


class FullReport(_Base):
    """Everything: ``report.html`` (self-contained) and ``report.json`` under ``<root>/<v>/reports/``."""

    seed = luigi.IntParameter(default=0)

    def requires(self):
        common = {**self.common(), "seed": self.seed}
        return {"data": self._data(), "ablation": Ablation(**common),
                "parity": ReferenceCheck(**common, attention="both"),
                "trained": {a: TrainedModel(**common, attention=a) for a in ATTENTIONS},
                "evaluated": {a: Evaluation(**common, attention=a) for a in ATTENTIONS}}

    def output(self):
        d = artifacts.report_dir(self.root, *self.keys(), self.seed)
        return {"html": luigi.LocalTarget(os.path.join(d, "report.html")),
                "json": luigi.LocalTarget(os.path.join(d, "report.json"))}

    @exclusive
    def run(self):
        from pipeline.report import build_report

        started = time.time()
        inputs = self.input()
        runs = {a: {"dir": os.path.dirname(inputs["trained"][a].path), "train": read_json(inputs["trained"][a]),
                    "eval": read_json(inputs["evaluated"][a])} for a in ATTENTIONS}
        html, summary = build_report(build.read_dataset(inputs["data"]), self.get_preset(), self.seed, runs,
                                     read_json(inputs["ablation"])["ablation"], read_json(inputs["parity"]),
                                     cam_variant="official")
        summary["report_seconds"] = round(time.time() - started, 3)
        # json first, html last: the html is what a person opens, and it appears only when both are complete
        write_json(self.output()["json"].path, summary)
        artifacts.write_text(self.output()["html"].path, html)


class CheckpointReport(luigi.Task):
    """An imported checkpoint run on a folder of images: ``report.html`` (self-contained) and
    ``report.json`` under ``<root>/<v>/checkpoint-reports/<checkpoint stem>-<key>/``, the key a hash of
    the checkpoint's bytes, the images and the options. The work is in :mod:`pipeline.checkpoint_report`.

    ``luigi --module pipeline CheckpointReport --checkpoint FILE --images DIR``. A missing checkpoint, or
    an images folder that is missing or holds no image, fails the build when it is scheduled, before any work.
    """

    checkpoint = luigi.Parameter(description="checkpoint file (formats of danet.load_checkpoint)")
    images = luigi.Parameter(description="folder of images (png, jpg, ...)")
    format = luigi.ChoiceParameter(choices=("auto",) + FORMATS, default="auto")
    classes = luigi.Parameter(default="", description=" | ".join([*CLASS_NAMES, "K"]) + " (default: the checkpoint's)")
    check_size = luigi.IntParameter(default=512, description="long side of the image the NumPy check runs on")

    @property
    def root(self) -> str:
        return PipelineConfig().root

    @functools.cached_property
    def image_files(self) -> list:
        from pipeline.checkpoint_report import list_images

        return list_images(self.images)

    def requires(self):
        return []

    def output(self):
        from pipeline.checkpoint_report import content_key, report_dir

        key = content_key(self.checkpoint, self.image_files, format=self.format, classes=self.classes,
                          check_size=self.check_size, code_version=CODE_VERSION)
        d = report_dir(self.root, self.checkpoint, key)
        return {"html": luigi.LocalTarget(os.path.join(d, "report.html")),
                "json": luigi.LocalTarget(os.path.join(d, "report.json"))}

    @exclusive
    def run(self):
        from pipeline.checkpoint_report import build_checkpoint_report

        started = time.time()
        html, summary = build_checkpoint_report(self.checkpoint, self.image_files, self.format, self.classes or None,
                                                self.check_size, progress=PipelineConfig().progress)
        summary.update(task=self.task_family, params=self.param_kwargs, code_version=CODE_VERSION,
                       seconds=round(time.time() - started, 3))
        write_json(self.output()["json"].path, summary)        # json first: the html appears only when both are
        artifacts.write_text(self.output()["html"].path, html)


use_local_scheduler_unless_one_is_named()
command_line.install()  # under `luigi`: one-line parameter errors, the result's path printed last
