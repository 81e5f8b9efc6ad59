"""The built-in dataset: "keyed shapes", where a pixel's class depends on a cue out of local reach.

Each scene is a wide strip (32 x 384 by default) of textured gray background. At one end (left or
right, at random) stands a coloured stripe, the *key*: red or blue. At the far end sit two to
five gray shapes (discs and squares, all the same gray). A shape's class is decided by the key's
colour alone -- "red-keyed shape" or "blue-keyed shape" -- and nothing about the shape itself
tells the two apart. Classes: 0 background, 1 red-keyed shape, 2 blue-keyed shape, 3 key.

Why it makes DANet's point. Every shape pixel lies farther from every key pixel than half the
receptive field of the dilated-FCN baseline (see :func:`fcn_receptive_field`), so a model that
sees only locally cannot know the key's colour and must guess: about half its shape pixels are
wrong. Attention is global: PAM can look at the key's position, CAM's A·Aᵀ sums over all
positions and so carries the key's colour to every pixel.

Generation is deterministic for a seed (NumPy's PCG64) and takes seconds. Files are written in a
SegNet-like layout (:class:`pipeline.datasets.KeyedShapes`, the dataset ``synthetic``, reads them
like any other dataset).
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from danet.classes import CLASS_NAMES as CLASS_SETS
from pipeline.datasets import KeyedShapes  # noqa: F401 -- the loader of what generate writes

CLASS_NAMES = CLASS_SETS["synthetic"]  # ("background", "red-keyed shape", "blue-keyed shape", "key")
KEY_COLOURS = {1: (200, 40, 40), 2: (40, 70, 210)}   # class of the shapes -> key colour (RGB)
SHAPE_GRAY = 150
# Scene geometry of the default dataset. The dilated tiny backbone's FCN path sees 427 pixels
# (danet.receptive_field), 213 on each side of a feature cell; the align_corners upsampling stretches
# that to at most 223 to one side of an output pixel (input gradient, 32 x 384): 224 leaves the key out
# of reach of every shape pixel (docs/builtin-data.md; tests/test_builtin_data.py measures it).
SCENE_DEFAULTS = {"height": 32, "width": 384, "min_distance": 224, "key_size": (32, 24), "n_shapes": (2, 5),
                  "radius": (8, 13)}


def render_scene(rng: np.random.Generator, height: int = 32, width: int = 384,
                 min_distance: int = SCENE_DEFAULTS["min_distance"], key_size: tuple = (32, 24),
                 shading: float = 15.0, n_shapes: tuple = (2, 5),
                 radius: tuple = (8, 13)) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image (H, W, 3) uint8 and label (H, W) uint8.

    Every shape pixel is at least ``min_distance`` pixels (horizontally, hence in any norm) from
    every key pixel.
    """
    # background: mid gray with per-pixel noise and a smooth horizontal shading
    shade = np.linspace(-shading, shading, width)[None, :] * rng.uniform(-1, 1)
    image = 110 + shade + rng.normal(0, 12, (height, width))
    image = np.repeat(image[:, :, None], 3, axis=2)                       # (H, W, 3)
    label = np.zeros((height, width), np.uint8)                           # (H, W)

    shape_class = int(rng.integers(1, 3))                                 # 1 red key, 2 blue key
    key_left = bool(rng.integers(0, 2))
    kh, kw = min(key_size[0], height), key_size[1]
    kx = int(rng.integers(0, 6))
    kx = kx if key_left else width - kw - kx
    ky = int(rng.integers(0, height - kh + 1))
    image[ky:ky + kh, kx:kx + kw] = KEY_COLOURS[shape_class]
    label[ky:ky + kh, kx:kx + kw] = 3

    # shapes live in the far zone: x such that |x - any key pixel| >= min_distance
    zone = (kx + kw - 1 + min_distance, width - 2) if key_left else (2, kx - min_distance)
    if zone[1] - zone[0] < 24:
        raise ValueError(f"render_scene: width {width} leaves no room for shapes at distance {min_distance}")
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(int(rng.integers(n_shapes[0], n_shapes[1] + 1))):
        r = int(rng.integers(radius[0], radius[1] + 1))
        cx = int(rng.integers(zone[0] + r, zone[1] - r + 1))
        cy = int(rng.integers(r + 1, height - r - 1))
        if rng.integers(0, 2):
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r                # disc
        else:
            mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)               # square
        image[mask] = SHAPE_GRAY + rng.normal(0, 6, (int(mask.sum()), 1))
        label[mask] = shape_class
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate(root: str, *, n_train: int = 400, n_val: int = 100, seed: int = 0, height: int = 32,
             width: int = 384, min_distance: int = SCENE_DEFAULTS["min_distance"], key_size: tuple = (32, 24),
             shading: float = 15.0, n_shapes: tuple = (2, 5), radius: tuple = (8, 13),
             progress: bool = False) -> dict:
    """Write the dataset under ``root`` (PNG files, split lists and meta.json); returns the meta."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        os.makedirs(os.path.join(root, "images", split), exist_ok=True)
        os.makedirs(os.path.join(root, "labels", split), exist_ok=True)
        lines = []
        for i in tqdm(range(n), desc=f"generate {split}", disable=not progress, unit="img"):
            image, label = render_scene(rng, height, width, min_distance, key_size, shading, n_shapes, radius)
            img_rel = f"images/{split}/{i:06d}.png"
            lbl_rel = f"labels/{split}/{i:06d}.png"
            Image.fromarray(image).save(os.path.join(root, img_rel))
            Image.fromarray(label).save(os.path.join(root, lbl_rel))
            lines.append(f"{img_rel} {lbl_rel}\n")
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.writelines(lines)
    meta = {"name": "keyed-shapes", "classes": list(CLASS_NAMES), "n_train": n_train, "n_val": n_val,
            "seed": seed, "height": height, "width": width, "min_distance": min_distance,
            "key_size": list(key_size), "shading": shading, "n_shapes": list(n_shapes), "radius": list(radius)}
    with open(os.path.join(root, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta
