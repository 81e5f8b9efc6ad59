"""Reading a user's image file for the network: uint8 RGB, fully decoded, with a clear one-line
error naming the file otherwise. 16-bit images are scaled by their real range, not clipped to 8
bits; an image over a pixel limit is refused from its header, before it is decoded.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MAX_PIXELS = 32_000_000   # 8000×4000; a 10000×10000 image needs over 6 GiB to predict


def read_image(path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3), fully decoded; a ValueError naming the file otherwise.

    16-bit images (PNG modes ``I;16``/``I``) are scaled by their real range, round(v · 255 / 65535),
    not clipped to 8 bits; 32-bit ones (``F``, a TIFF's ``I``) have no known range and are refused.
    An image over ``max_pixels`` (None: no limit) is refused from its header, before decoding.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            W, H = img.size
            if max_pixels and H * W > max_pixels:
                raise ValueError(f"image '{path}': {H}×{W} = {H * W:,} pixels is over the limit of {max_pixels:,} "
                                 f"(memory grows with the pixels: over 6 GiB at 100 Mpixel); resize it, or raise "
                                 f"the limit (danet: --max-pixels N)")
            img.load()
            if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):
                v = np.asarray(img, np.float64)                              # (H, W) in 0 ... 65535
                return np.repeat(np.round(v * (255 / 65535)).astype(np.uint8)[..., None], 3, axis=2)
            if img.mode in ("I", "F"):
                raise ValueError(f"image '{path}': mode '{img.mode}' (32-bit) has no known range; "
                                 f"save it as 8- or 16-bit")
            return np.array(img.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"image '{path}': no such file") from None
    except IsADirectoryError:
        raise ValueError(f"image '{path}': is a directory, not an image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if str(e).startswith(f"image '{path}'"):                       # ours, already one line
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"image '{path}': not a readable image ({first})") from None
