"""The built-in dataset, "keyed shapes", as :func:`pipeline.synthetic.generate` writes it."""

from pathlib import Path

from danet.classes import CLASS_NAMES as _CLASS_NAMES
from pipeline.datasets.base import SegmentationDataset, read_split_file


class KeyedShapes(SegmentationDataset):
    """The built-in dataset as written by :func:`pipeline.synthetic.generate` (what a scene holds is in
    that module's docstring).

    Layout::

        root/images/{train,val}/000000.png     RGB
        root/labels/{train,val}/000000.png     class indices (uint8)
        root/{train,val}.txt                   "images/train/000000.png labels/train/000000.png"
        root/meta.json                          parameters, class names, receptive-field figures
    """

    NUM_CLASSES = len(_CLASS_NAMES["synthetic"])
    CLASS_NAMES = _CLASS_NAMES["synthetic"]
    SPLITS = ("train", "val")

    def _split_source(self):
        return self.root / f"{self.split}.txt"

    def _list_samples(self):
        pairs = [line.split() for line in read_split_file(self._split_source())]
        return [(self.root / p[0], self.root / p[1]) for p in pairs]

    def map_label(self, raw):
        return raw

    @classmethod
    def find_root(cls, data_root):
        return Path(data_root) if (Path(data_root) / "meta.json").is_file() else None
