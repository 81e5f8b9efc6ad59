"""Training and evaluation presets, chosen by one name.

``cpu`` (default) and ``smoke`` are this project's, for the built-in dataset on a laptop CPU;
``camvid`` trains on real CamVid on a CPU, ``camvid-gpu`` on one GPU (docs/gpu.md);
``cityscapes`` and ``voc`` are the paper's recipes as the authors' released code ran them
(ResNet-101, output stride 8, multi-grid (4, 8, 16), batch 8, crop 768 / 512, SGD momentum 0.9,
lr 0.003 with the head at 10x, poly decay 0.9, weight decay 1e-4, 1:1:1 losses, random scale in
[0.75, 2.0], random crop and flip; evaluation with a sliding window and flip).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    dataset: str                       # default dataset for this preset
    backbone: str = "tiny"
    output_stride: int = 8
    multi_grid: tuple | None = None
    dilated: bool = True
    pretrained_backbone: str | None = None
    iterations: int = 1000
    batch_size: int = 8
    crop_size: int | None = None       # square random crop; None trains on whole images
    scale_range: tuple | None = None   # random rescale of the image before the crop
    flip: bool = True
    class_balance: float = 0.0         # loss class weights (median_k f_k / f_k) ** class_balance; 0: unweighted
    lr: float = 0.01
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    checkpoint_every: int = 250
    log_every: int = 10
    num_workers: int = 0
    amp: bool = True                   # mixed precision, used on CUDA only
    channels_last: bool = False        # model and batches in channels_last memory format (tensor cores like it)
    data_on_device: bool = False       # decode the train split once onto the training device, augment there
    sync_bn: bool = False
    eval_mode: str = "whole"           # "whole" or "sliding"
    eval_crop: int | None = None
    eval_stride: int | None = None
    eval_flip: bool = False
    eval_scales: tuple = (1.0,)
    synthetic: dict = dataclasses.field(default_factory=dict)  # built-in dataset size

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS = {
    # the main job: the ablation on the built-in data, on a laptop CPU (docs/builtin-data.md)
    "cpu": Preset(name="cpu", dataset="synthetic", iterations=1600, batch_size=8, lr=0.02,
                  checkpoint_every=400, log_every=20, synthetic={"n_train": 400, "n_val": 100}),
    # notebook 09: attention needed and learned in ~40 s on one CPU thread (docs/builtin-data.md)
    "tutorial": Preset(name="tutorial", dataset="synthetic", dilated=False, iterations=1000, batch_size=4, lr=0.01,
                       head_lr_mult=20.0, checkpoint_every=1000, log_every=10,
                       synthetic={"n_train": 64, "n_val": 16, "width": 224, "min_distance": 150, "shading": 0.0,
                                  "n_shapes": [3, 3]}),
    # real CamVid on a 2-core CPU, no ImageNet weights, FullReport within an hour (docs/camvid.md)
    "camvid": Preset(name="camvid", dataset="camvid", iterations=2500, batch_size=8, crop_size=192,
                     scale_range=(0.375, 0.75), class_balance=0.5, lr=0.02, checkpoint_every=500, log_every=25,
                     eval_scales=(0.5,), eval_flip=True),
    # ResNet-50 DANet on CamVid at full resolution on one GPU; iterations an estimate (docs/gpu.md)
    "camvid-gpu": Preset(name="camvid-gpu", dataset="camvid", backbone="resnet50", iterations=1200, batch_size=32,
                         crop_size=360, scale_range=(0.75, 1.5), class_balance=0.5, lr=0.02, checkpoint_every=500,
                         log_every=20, channels_last=True, data_on_device=True, eval_flip=True),
    # the tests' seconds-long run of the whole pipeline
    "smoke": Preset(name="smoke", dataset="synthetic", iterations=6, batch_size=2, lr=0.01,
                    checkpoint_every=3, log_every=1, synthetic={"n_train": 8, "n_val": 4}),
    # the authors' recipes (module docstring)
    "cityscapes": Preset(name="cityscapes", dataset="cityscapes", backbone="resnet101", multi_grid=(4, 8, 16),
                         iterations=89_000, batch_size=8, crop_size=768, scale_range=(0.75, 2.0), lr=0.003,
                         checkpoint_every=2000, log_every=20, num_workers=8, sync_bn=True,
                         eval_mode="sliding", eval_crop=768, eval_stride=512, eval_flip=True),
    "voc": Preset(name="voc", dataset="voc2012aug", backbone="resnet101", multi_grid=(4, 8, 16),
                  iterations=30_000, batch_size=8, crop_size=512, scale_range=(0.75, 2.0), lr=0.003,
                  checkpoint_every=2000, log_every=20, num_workers=8, sync_bn=True,
                  eval_mode="sliding", eval_crop=512, eval_stride=341, eval_flip=True),
}


def preset_for(dataset: str, preset_file: str = "") -> str:
    """The preset made for ``dataset``: the first in :data:`PRESETS` whose ``dataset`` it is
    (synthetic: cpu, camvid: camvid, cityscapes: cityscapes, voc2012aug: voc); VOC 2012 without SBD's
    images trains with the VOC recipe too. The tasks' default. A dataset with none (ADE20K) gets ``""``
    under a ``preset_file``, whose ``base`` must then name one (:func:`resolve`); without, it is refused."""
    dataset = {"voc2012": "voc2012aug"}.get(dataset, dataset)
    for name, preset in PRESETS.items():
        if preset.dataset == dataset:
            return name
    if preset_file:
        return ""
    raise ValueError(f"dataset {dataset!r} has no preset of its own; name one with --preset "
                     f"({' | '.join(PRESETS)}) or --preset-file with base = \"<preset>\"")


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def resolve(name: str, overrides: dict | None = None, preset_file: str | None = None) -> Preset:
    """The effective preset: built-in ``name``, then the fields of ``preset_file`` (TOML), then ``overrides``.

    A preset file holds preset fields at its top level, and optionally ``base = "<preset>"`` (default:
    ``name``); the result is named after the file. Every field is checked by name and type
    (:func:`with_fields`); :func:`validate` then checks that the values make sense together.
    """
    preset = get_preset(name) if name or not preset_file else None    # "": the file's base names it
    if preset_file:
        import tomllib

        try:
            with open(preset_file, "rb") as f:
                fields = tomllib.load(f)
        except FileNotFoundError:
            raise ValueError(f"preset file {preset_file!r} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"preset file {preset_file!r} is not valid TOML: {err}") from None
        try:
            base = fields.pop("base", name)
            if not base:
                raise ValueError(f"no base = \"<preset>\" in the file and no --preset; name one of {sorted(PRESETS)}")
            preset = get_preset(base)
        except ValueError as err:
            raise ValueError(f"preset file {preset_file!r}: base: {err}") from None
        stem = os.path.splitext(os.path.basename(preset_file))[0]
        preset = with_fields(preset, {"name": stem, **fields}, where=f"preset file {preset_file!r}")
    if overrides:
        preset = with_fields(preset, dict(overrides), where="overrides")
    return with_pretrained_backbone(preset)


def with_pretrained_backbone(preset: Preset) -> Preset:
    """``preset`` with its backbone matched to its ``pretrained_backbone`` file, if it names one.

    The depth is read from the file's weights (:func:`danet.checkpoint.backbone_of`). A ``tiny``
    backbone -- this project's, which has no ImageNet weights -- becomes the file's ResNet, so a
    from-scratch preset (``camvid``) uses ImageNet weights when given them; any other backbone must
    be the file's, else it is refused naming both. A URL is not read here: its backbone must be named.
    """
    source = preset.pretrained_backbone
    if not source:
        return preset
    if "://" in source:
        if preset.backbone == "tiny":
            raise ValueError(f"preset {preset.name!r}: pretrained_backbone {source!r} is a URL; name its "
                             f"backbone too (e.g. \"backbone\": \"resnet18\"), tiny has no ImageNet weights")
        return preset
    try:
        stat = os.stat(source) if os.path.isfile(source) else None     # a missing file: backbone_of says so
        arch = _backbone_of(source, stat and (stat.st_mtime_ns, stat.st_size))
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"preset {preset.name!r}: {err}") from None
    if arch == preset.backbone:
        return preset
    if preset.backbone == "tiny":
        return dataclasses.replace(preset, backbone=arch)
    raise ValueError(f"preset {preset.name!r}: pretrained_backbone {source!r} holds a {arch} but the backbone "
                     f"is {preset.backbone!r}; set \"backbone\": \"{arch}\" or give a {preset.backbone} file")


@functools.lru_cache(maxsize=8)
def _backbone_of(path: str, version: tuple | None) -> str:
    """:func:`danet.checkpoint.backbone_of`, read once per ``version`` (modification time, size) of
    the file: every task's output paths resolve the preset, and a ResNet-101 file is 170 MB."""
    from danet.checkpoint import backbone_of

    return backbone_of(path)


def with_fields(preset: Preset, fields: dict, where: str = "overrides") -> Preset:
    """``preset`` with ``fields`` replaced, each checked against the field's declared type.

    Lists become tuples where the field is a tuple; an int is accepted for a float; ``None`` only
    where the field allows it. An unknown field, or a value of the wrong type, is refused by name.
    """
    declared = {f.name: f.type for f in dataclasses.fields(Preset)}
    problems, clean = [], {}
    for key, value in fields.items():
        if key not in declared:
            problems.append(f"unknown field {key!r} (fields: {', '.join(sorted(declared))})")
            continue
        kinds = [k.strip() for k in str(declared[key]).split("|")]
        if isinstance(value, list) and "tuple" in kinds:
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        ok = ((value is None and "None" in kinds)
              or (isinstance(value, bool) and "bool" in kinds)
              or (isinstance(value, int) and not isinstance(value, bool) and ("int" in kinds or "float" in kinds))
              or (isinstance(value, float) and "float" in kinds)
              or (isinstance(value, str) and "str" in kinds)
              or (isinstance(value, tuple) and "tuple" in kinds)
              or (isinstance(value, dict) and "dict" in kinds))
        if not ok:
            problems.append(f"field {key!r} must be {declared[key]}, got {value!r} ({type(value).__name__})")
        clean[key] = float(value) if "float" in kinds and isinstance(value, int) and not isinstance(value, bool) else value
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    return dataclasses.replace(preset, **clean)


def preset_key(preset: Preset) -> str:
    """The preset's name in output paths: its name if it is a built-in preset unchanged, else
    ``<name>-<8 hex digits of a hash of every field>`` -- any change of any field changes the path."""
    if PRESETS.get(preset.name) == preset:
        return preset.name
    canonical = json.dumps(preset.as_dict(), sort_keys=True, default=list)
    return f"{preset.name}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


def from_dict(fields: dict) -> Preset:
    """A Preset from ``as_dict()`` output (JSON turns tuples into lists), checked like overrides."""
    return with_fields(Preset(name=fields["name"], dataset=fields["dataset"]), fields, where="preset record")


def validate(preset: Preset, image_sizes: list | None = None) -> None:
    """Refuse impossible settings before any work starts; ``image_sizes`` is [(H, W), ...] of the train split."""
    from danet.backbone import ARCHS

    problems = []
    if preset.iterations < 1:
        problems.append(f"iterations must be >= 1, got {preset.iterations}")
    if preset.batch_size < 1:
        problems.append(f"batch_size must be >= 1, got {preset.batch_size}")
    if not preset.lr > 0:
        problems.append(f"lr must be > 0, got {preset.lr}")
    if preset.backbone not in ARCHS:
        problems.append(f"unknown backbone {preset.backbone!r} (choose one of {sorted(ARCHS)})")
    if preset.output_stride not in (8, 16, 32):
        problems.append(f"output_stride must be 8, 16 or 32, got {preset.output_stride}")
    if preset.checkpoint_every < 1 or preset.log_every < 1:
        problems.append("checkpoint_every and log_every must be >= 1")
    if not 0 <= preset.class_balance <= 1:
        problems.append(f"class_balance must be in [0, 1] (0: unweighted, 1: median-frequency balancing), "
                        f"got {preset.class_balance}")
    if preset.eval_mode not in ("whole", "sliding"):
        problems.append(f"eval_mode must be 'whole' or 'sliding', got {preset.eval_mode!r}")
    if preset.eval_mode == "sliding" and not (preset.eval_crop and preset.eval_stride
                                               and 0 < preset.eval_stride <= preset.eval_crop):
        problems.append("sliding-window evaluation needs eval_crop and 0 < eval_stride <= eval_crop")
    if preset.scale_range and not 0 < preset.scale_range[0] <= preset.scale_range[1]:
        problems.append(f"scale_range must be (low, high) with 0 < low <= high, got {preset.scale_range}")
    if preset.crop_size is not None and image_sizes:
        biggest = max(max(h, w) for h, w in image_sizes) * (preset.scale_range[1] if preset.scale_range else 1)
        if preset.crop_size > biggest:
            problems.append(f"crop_size {preset.crop_size} is larger than every training image (largest side "
                            f"{biggest:.0f} after scaling): every crop would be mostly padding")
    if preset.crop_size is None and image_sizes and len(set(map(tuple, image_sizes))) > 1 and preset.batch_size > 1:
        problems.append("training on whole images (crop_size None) needs images of one size for batches > 1; "
                        f"found {len(set(map(tuple, image_sizes)))} sizes -- set crop_size")
    if problems:
        raise ValueError(f"preset {preset.name!r} cannot run: " + "; ".join(problems))
