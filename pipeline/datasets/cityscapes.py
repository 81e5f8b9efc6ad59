"""Cityscapes fine annotations (a local copy only: the site needs a login)."""

from pathlib import Path

import numpy as np

from danet.classes import CLASS_NAMES as _CLASS_NAMES
from pipeline.datasets.base import IGNORE_INDEX, SegmentationDataset
from pipeline.datasets.reading import DatasetError

CITYSCAPES_LOGIN_HELP = (
    "Cityscapes cannot be downloaded automatically: https://www.cityscapes-dataset.com "
    "requires a login. Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
    "there and unzip both into {root}, so that {root}/leftImg8bit and {root}/gtFine exist.")

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
