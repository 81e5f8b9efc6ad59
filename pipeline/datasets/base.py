"""What every dataset shares: the ignore value, split files, and :class:`SegmentationDataset`
(sample listing, loading, normalisation, verification)."""

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.datasets.reading import DatasetError, normalize, read_image, read_label

IGNORE_INDEX = 255


def read_split_file(path: Path) -> list[str]:
    """Non-empty, stripped lines of a split file; DatasetError if missing."""
    if not path.is_file():
        raise DatasetError(f"split file {path} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


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
