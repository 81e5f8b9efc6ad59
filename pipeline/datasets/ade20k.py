"""ADE20K / MIT Scene Parsing benchmark (SceneParse150)."""

from pathlib import Path

import numpy as np

from danet.classes import CLASS_NAMES as _CLASS_NAMES
from pipeline.datasets.base import IGNORE_INDEX, SegmentationDataset
from pipeline.datasets.reading import DatasetError


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
