"""Reading a dataset's files: images as uint8 RGB, labels as raw integer values, and the
normalisation every item receives. A file that cannot be read raises :class:`DatasetError`, one line
naming it."""

import numpy as np
import torch
from PIL import Image

from danet import preprocess
from danet.images import read_image as _read_rgb


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or inconsistent."""


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
