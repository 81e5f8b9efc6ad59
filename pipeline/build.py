"""Construction of what the tasks work on: datasets on disk, Dataset objects, models and checkpoints.

Plain functions of plain values (paths, presets, records); no Luigi. ``pipeline.tasks`` calls them
from its tasks, ``pipeline.distributed`` from its training processes, tests and notebooks directly.
A *dataset record* is the content of a PreparedDataset's ``dataset.json``.
"""

from __future__ import annotations

import os

import torch

from danet import DANet, load_state_dict_strict
from pipeline import datasets, synthetic
from pipeline.artifacts import atomic_path
from pipeline.presets import Preset


def prepare_dataset(name: str, preset: Preset, out_dir: str, data_root: str = "", progress: bool = True) -> dict:
    """Generate (synthetic) or find/download (real) dataset ``name``, verify every file; its record.

    The built-in dataset is generated into ``out_dir`` (atomically, as a whole directory); a real
    one is used from ``data_root`` if given, else downloaded into ``out_dir/raw``.
    """
    cls = datasets.dataset_class(name)
    if name == "synthetic":
        with atomic_path(out_dir) as tmp:
            synthetic.generate(tmp, **{"n_train": 400, "n_val": 100, **preset.synthetic}, progress=progress)
        root = out_dir
    elif data_root:  # a copy the user has: used as it is, never downloaded into
        check_data_root(name, data_root)
        root = str(datasets.prepare(name, data_root, download=False, progress=progress))
    else:
        root = str(download_dataset(name, out_dir, progress))
    counts = {split: cls(root, split).verify() for split in ("train", "val")}
    sizes = sorted({image_size(p) for p, _ in cls(root, "train").samples})
    inside = os.path.commonpath([os.path.abspath(root), os.path.abspath(out_dir)]) == os.path.abspath(out_dir)
    # relative to the record when the data lives beside it, so that a copied artifact root reads its own copy
    data_dir = os.path.relpath(root, out_dir) if inside else os.path.abspath(root)
    return {"dataset": name, "data_dir": data_dir, "num_classes": cls.NUM_CLASSES,
            "class_names": list(cls.CLASS_NAMES), "counts": counts, "train_image_sizes": sizes[:1000]}


def download_dataset(name: str, out_dir: str, progress: bool = True):
    """Download dataset ``name`` into ``out_dir/raw``. If that fails (no network, a server error), the
    folders this call created are removed if empty and the error says how to get the data by hand."""
    from pipeline.download import DownloadError

    raw = os.path.join(out_dir, "raw")
    created = [d for d in (out_dir, raw, os.path.join(raw, "downloads")) if not os.path.exists(d)]
    try:
        return datasets.prepare(name, raw, progress=progress)
    except DownloadError as e:
        for d in reversed(created):        # a kept .part (to resume) keeps its folders
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        raise DownloadError(f"{e}. {by_hand(name)}") from None


def by_hand(name: str) -> str:
    """How to fetch dataset ``name`` without the pipeline, and the ``--data-root`` to pass then."""
    keys = ["voc2012", "sbd"] if name == "voc2012aug" else [name]
    steps = []
    for key in keys:
        url = datasets.SOURCES[key]["url"]
        if url.startswith("https://github.com/") and "/archive/" in url:   # a GitHub repository's archive
            steps.append(f"git clone {url.split('/archive/')[0]} DIR")
        else:
            steps.append(f"download {url} and extract it into DIR")
    return (f"To get the data by hand: {'; '.join(steps)}; then run again with --dataset {name} "
            f"--data-root DIR (DIR any folder of yours)")


def check_data_root(name: str, data_root: str) -> None:
    """Refuse a ``--data-root`` that does not exist or does not hold dataset ``name``, saying what was expected."""
    cls = datasets.dataset_class(name)
    if not os.path.isdir(data_root):
        found = "is a file, not a folder" if os.path.exists(data_root) else "does not exist"
        raise ValueError(f"--data-root {data_root!r} {found}; it should hold "
                         f"{name} laid out as\n{datasets.expected_layout(cls)}")
    if cls.find_root(data_root) is None:
        raise ValueError(f"--data-root {data_root!r} holds no {name} data; expected under it\n"
                         f"{datasets.expected_layout(cls)}")


def image_size(path) -> tuple[int, int]:
    """(H, W) from the image header, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as img:
        return img.height, img.width


def read_dataset(path) -> dict:
    """A dataset record (``dataset.json``; a path or a Luigi target) with ``data_dir`` made absolute:
    a relative one is relative to the record's own folder (generated or downloaded data), an absolute
    one is a ``--data-root`` copy outside the artifact root."""
    from pipeline.artifacts import read_json

    record = read_json(path)
    folder = os.path.dirname(os.path.abspath(getattr(path, "path", path)))
    return {**record, "data_dir": os.path.normpath(os.path.join(folder, record["data_dir"]))}


def load_dataset(record: dict, split: str, transform=None):
    """The Dataset object of a dataset record's ``split`` (a record read by :func:`read_dataset`)."""
    if not os.path.isabs(record["data_dir"]):
        raise ValueError(f"dataset record: data_dir {record['data_dir']!r} is relative to its dataset.json; "
                         f"read the record with pipeline.build.read_dataset(path), which resolves it")
    return datasets.dataset_class(record["dataset"])(record["data_dir"], split, transform=transform)


def build_model(preset: Preset, num_classes: int, attention: str, cam_variant: str,
                pretrained: bool = True) -> DANet:
    """The DANet (or ablation) a preset describes; ImageNet weights for the backbone if the preset names them."""
    model = DANet(num_classes, backbone=preset.backbone, output_stride=preset.output_stride,
                  multi_grid=preset.multi_grid, attention=attention, cam_variant=cam_variant,
                  pretrained_backbone=preset.pretrained_backbone if pretrained else None, dilated=preset.dilated)
    if preset.sync_bn and torch.distributed.is_available() and torch.distributed.is_initialized():
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def save_model(model: torch.nn.Module, path: str) -> None:
    """The model's state_dict (CPU tensors), atomically."""
    model = getattr(model, "module", model)
    with atomic_path(path) as tmp:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)


def load_trained(path: str, preset: Preset, num_classes: int, attention: str, cam_variant: str) -> DANet:
    """A trained model from its ``model.pt``, in eval mode on the CPU; any mismatch is refused by name."""
    model = build_model(preset, num_classes, attention, cam_variant, pretrained=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    load_state_dict_strict(model, state, where=f"checkpoint {path}")
    return model.eval()
