"""PASCAL VOC 2012, alone and with SBD's augmented training set (``voc2012aug``): the datasets,
and the conversion of SBD into the layout mmsegmentation's converter writes."""

import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from danet.classes import CLASS_NAMES as _CLASS_NAMES
from pipeline.artifacts import atomic_path
from pipeline.datasets.base import IGNORE_INDEX, SegmentationDataset, read_split_file
from pipeline.datasets.reading import DatasetError


class VOC2012(SegmentationDataset):
    """PASCAL VOC 2012 segmentation (21 classes including background).

    Layout::

        root/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
        root/VOCdevkit/VOC2012/SegmentationClass/<id>.png   palette PNG, index = class, 255 = border
        root/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt   one <id> a line
    """

    NUM_CLASSES = 21
    CLASS_NAMES = _CLASS_NAMES["voc2012"]
    SPLITS = ("train", "val", "trainval")

    def _split_source(self) -> Path:
        segmentation_sets = self.root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
        return segmentation_sets / f"{self.split}.txt"

    def _list_samples(self):
        base = self.root / "VOCdevkit" / "VOC2012"
        return [(base / "JPEGImages" / f"{name}.jpg", base / "SegmentationClass" / f"{name}.png")
                for name in read_split_file(self._split_source())]

    def map_label(self, raw):
        return raw.astype(np.int64)

    @classmethod
    def find_root(cls, data_root):
        data_root = Path(data_root)
        return data_root if (data_root / "VOCdevkit" / "VOC2012").is_dir() else None


class VOC2012Aug(VOC2012):
    """PASCAL VOC 2012 with SBD's extra annotations: "trainaug", 10,582 training images, 21 classes.

    Layout::

        root/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
        root/VOCdevkit/VOC2012/SegmentationClass/<id>.png      VOC's labels (palette PNG, 255 = border)
        root/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png   SBD's labels, from SBD's cls/<id>.mat
        root/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,aug,trainaug}.txt

    This is the set mmsegmentation's VOC results train on, in the layout its converter
    ``tools/dataset_converters/voc_aug.py`` writes (:func:`prepare` builds it from the two archives in
    :data:`SOURCES`, or a copy already converted by mmseg is used as is):

    - ``SegmentationClassAug/<id>.png``: ``GTcls.Segmentation`` of every SBD ``cls/<id>.mat``
      (read with ``scipy.io.loadmat(...)["GTcls"][0]["Segmentation"][0]``, as torchvision's
      ``SBDataset`` and mmseg's converter do), saved as uint8 class indices 0-20;
    - ``aug.txt`` = (SBD train ∪ SBD val) − (VOC train ∪ VOC val);
      ``trainaug.txt`` = (VOC train ∪ SBD train ∪ SBD val) − VOC val, which mmseg asserts has
      10,582 names (1,464 VOC train + 9,118 aug) on the published data.

    Split ``train`` is VOC ``train.txt`` with VOC's own labels followed by ``aug.txt`` with SBD's,
    as mmseg's ``configs/_base_/datasets/pascal_voc12_aug.py`` concatenates them: an image that is
    in VOC train and in SBD keeps VOC's label, and no image of VOC val is trained on (SBD's own
    train list holds some). Split ``val`` is VOC 2012 val (1,449 images) with VOC's labels.
    """

    SPLITS = ("train", "val")
    _PARTS = {"train": (("train.txt", "SegmentationClass"), ("aug.txt", "SegmentationClassAug")),
              "val": (("val.txt", "SegmentationClass"),)}

    def _split_source(self) -> Path:
        segmentation_sets = self.root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
        return segmentation_sets / self._PARTS[self.split][-1][0]

    def _list_samples(self):
        base = self.root / "VOCdevkit" / "VOC2012"
        sets = base / "ImageSets" / "Segmentation"
        return [(base / "JPEGImages" / f"{name}.jpg", base / labels / f"{name}.png")
                for split_file, labels in self._PARTS[self.split]
                for name in read_split_file(sets / split_file)]

    @classmethod
    def find_root(cls, data_root):
        data_root = Path(data_root)
        base = data_root / "VOCdevkit" / "VOC2012"
        converted = ((base / "SegmentationClassAug").is_dir()
                     and (base / "ImageSets" / "Segmentation" / "aug.txt").is_file())
        return data_root if converted else None


def find_sbd(data_root) -> Path | None:
    """SBD's ``dataset`` folder under ``data_root`` (holding ``cls/``, ``train.txt``, ``val.txt``), or None.

    Looked for where ``benchmark.tgz`` extracts (``benchmark_RELEASE/dataset``, torchvision's
    ``SBDataset`` reads it there) and where mmseg's dataset guide puts it (``VOCdevkit/VOCaug/dataset``).
    """
    for candidate in (Path(data_root) / "benchmark_RELEASE" / "dataset",
                      Path(data_root) / "VOCdevkit" / "VOCaug" / "dataset"):
        if (candidate / "cls").is_dir() and (candidate / "train.txt").is_file():
            return candidate
    return None


def read_sbd_label(path) -> np.ndarray:
    """The class-index map (H, W) uint8 of one SBD ``cls/<id>.mat``: its ``GTcls.Segmentation``.

    Raises
    ------
    DatasetError
        If the file is missing, unreadable, not SBD's ``GTcls`` structure, or holds values other
        than the classes 0-20 (and 255).
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"SBD label {path} does not exist")
    try:
        mat = loadmat(path)
    except Exception as err:  # scipy raises OSError, ValueError, IndexError, MatReadError, zlib.error...
        raise DatasetError(f"SBD label {path} is unreadable or truncated: {type(err).__name__}: {err}") from None
    try:
        segmentation = np.asarray(mat["GTcls"][0]["Segmentation"][0])
    except (KeyError, IndexError, ValueError, TypeError):
        raise DatasetError(f"SBD label {path} is not SBD's structure: expected a struct GTcls with a "
                           f"field Segmentation, found variables {sorted(k for k in mat if not k.startswith('__'))}"
                           ) from None
    if segmentation.ndim != 2 or segmentation.dtype.kind not in "iu":
        raise DatasetError(f"SBD label {path}: GTcls.Segmentation should be an (H, W) integer array, "
                           f"found {segmentation.dtype} of shape {segmentation.shape}")
    bad = ((segmentation > 20) & (segmentation != IGNORE_INDEX)) | (segmentation < 0)
    if bad.any():
        raise DatasetError(f"SBD label {path} has values {sorted(np.unique(segmentation[bad]).tolist())[:10]} "
                           f"outside the VOC classes 0-20 and the ignore value {IGNORE_INDEX}")
    return segmentation.astype(np.uint8)


def trainaug_lists(voc_train, voc_val, sbd_train, sbd_val) -> tuple[list[str], list[str]]:
    """``(trainaug, aug)`` by mmseg's rule, each sorted.

    trainaug = (VOC train ∪ SBD train ∪ SBD val) − VOC val; aug = (SBD train ∪ SBD val) − (VOC train ∪ VOC val).
    """
    sbd, train, val = set(sbd_train) | set(sbd_val), set(voc_train), set(voc_val)
    return sorted((train | sbd) - val), sorted(sbd - train - val)


def build_voc2012aug(data_root, sbd_dir, progress: bool = True) -> Path:
    """Convert SBD into mmseg's layout inside the VOC 2012 tree under ``data_root`` (see :class:`VOC2012Aug`).

    Every ``cls/*.mat`` becomes ``SegmentationClassAug/<id>.png`` (the whole folder is written
    beside its place and renamed into it, so it is either absent or complete; an existing one is
    kept), then ``trainaug.txt`` and, last, ``aug.txt`` are written, each atomically.

    Raises
    ------
    DatasetError
        A split list is missing, an image of ``aug`` has no ``.mat``, or a ``.mat`` is unreadable
        (named); nothing is left half-written.
    """
    voc = Path(data_root) / "VOCdevkit" / "VOC2012"
    sets = voc / "ImageSets" / "Segmentation"
    sbd_dir = Path(sbd_dir)
    trainaug, aug = trainaug_lists(*(read_split_file(f) for f in (
        sets / "train.txt", sets / "val.txt", sbd_dir / "train.txt", sbd_dir / "val.txt")))
    mats = sorted((sbd_dir / "cls").glob("*.mat"))
    unlabelled = sorted(set(aug) - {m.stem for m in mats})
    if unlabelled:
        raise DatasetError(f"SBD lists {len(unlabelled)} image(s) with no label in {sbd_dir / 'cls'}, "
                           f"e.g. {unlabelled[0]}.mat")
    out = voc / "SegmentationClassAug"
    if not out.is_dir():
        with atomic_path(str(out)) as tmp:
            os.makedirs(tmp)
            for mat in tqdm(mats, desc="SBD .mat -> SegmentationClassAug", unit="file", disable=not progress):
                Image.fromarray(read_sbd_label(mat)).save(os.path.join(tmp, f"{mat.stem}.png"))
    for name, lines in (("trainaug.txt", trainaug), ("aug.txt", aug)):
        with atomic_path(str(sets / name)) as tmp, open(tmp, "w") as f:
            f.writelines(f"{line}\n" for line in lines)
    return Path(data_root)
