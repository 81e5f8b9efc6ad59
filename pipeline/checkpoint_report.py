"""The report on an imported checkpoint run on a folder of the user's images (``CheckpointReport``).

For each image: the colour segmentation, the overlay with a legend and the attention figure, the
same figures ``danet predict`` writes (:mod:`danet.figures`), and the interactive attention
explorer ``danet explore`` writes (:mod:`danet.explore`, in an ``<iframe srcdoc>``); for the first image, resized so its
long side is at most ``check_size``, the NumPy reference against PyTorch stage by stage in float64
and float32 (:func:`danet.network_check.check`); and the :class:`danet.CheckpointInfo`. One
self-contained HTML page (figures as PNG data URIs) and a JSON summary. No Luigi here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import os
import re
import resource

import numpy as np

from danet import figures
from danet.checkpoint import load_checkpoint
from danet.classes import class_set, names_beside
from danet.explore import explorer_html, iframe
from danet.images import read_image
from danet.network_check import check
from danet.numerics import TOLERANCE
from danet.prediction import histogram, predict_image
from pipeline.artifacts import CODE_VERSION, environment
from pipeline.report import html_img, html_page, html_table, legend_html, png_uri

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
BARS = TOLERANCE   # danet check's bars: 1e-10 in float64, 1e-4 in float32


def list_images(folder: str) -> list[str]:
    """The image files directly in ``folder``, sorted; a ValueError naming the folder if there are none."""
    if not os.path.isdir(folder):
        what = "does not exist" if not os.path.exists(folder) else "is not a folder"
        raise ValueError(f"--images '{folder}' {what}; expected a folder of images")
    found = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, f)))
    if not found:
        raise ValueError(f"--images '{folder}' holds no image file (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found


def content_key(checkpoint: str, images: list[str], **options) -> str:
    """12 hex digits of SHA-256 over the checkpoint's bytes, each image's name and bytes, and the options."""
    if not os.path.isfile(checkpoint):
        raise ValueError(f"--checkpoint '{checkpoint}': no such file")
    h = hashlib.sha256()
    for path in [checkpoint] + list(images):
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    h.update(json.dumps(options, sort_keys=True).encode())
    return h.hexdigest()[:12]


def report_dir(root: str, checkpoint: str, key: str) -> str:
    """``<root>/<v>/checkpoint-reports/<checkpoint stem>-<key>``."""
    stem = re.sub(r"(\.(pth|pt|tar|ckpt|bin))+$", "", os.path.basename(checkpoint)) or "checkpoint"
    return os.path.join(root, CODE_VERSION, "checkpoint-reports", f"{stem}-{key}")


SCALE_WORDS = {"gamma_pam": "γ (PAM)", "beta_cam": "β (CAM)"}
# CheckpointInfo's fields in words, in the table's order; a field not named here keeps its own name.
INFO_WORDS = {"file": "file", "format": "format", "num_classes": "classes", "backbone": "backbone",
              "stem": "stem", "stem_width": "stem width", "multi_grid": "multi-grid (layer4 dilations)",
              "output_stride": "output stride", "align_corners": "upsampling align_corners",
              "attention": "attention modules", "aux": "auxiliary head in the file",
              "ignored": "keys ignored", "filled": "BatchNorm counters filled in",
              "prefix_stripped": "key prefix stripped", "class_names": "class names in the file",
              "sources": "where each setting came from"}


def in_words(value) -> str:
    """A CheckpointInfo value as a person writes it: none, yes/no, a list joined by commas, a mapping as
    ``key: value`` pairs."""
    if value is None or value == "" or (isinstance(value, (tuple, list, dict)) and not value):
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {in_words(v)}" for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return ", ".join(in_words(v) for v in value)
    return str(value)


def info_rows(info) -> list[list[str]]:
    """The table rows of a :class:`danet.CheckpointInfo`: each field in words."""
    return [[INFO_WORDS.get(k, k.replace("_", " ")), in_words(v)] for k, v in dataclasses.asdict(info).items()]


def _resized(image: np.ndarray, longest: int) -> np.ndarray:
    from PIL import Image

    H, W = image.shape[:2]
    scale = longest / max(H, W)
    if scale >= 1:
        return image
    return np.array(Image.fromarray(image).resize((max(1, round(W * scale)), max(1, round(H * scale))), Image.BILINEAR))


def build_checkpoint_report(checkpoint: str, images: list[str], format: str = "auto", classes: str | None = None,
                            check_size: int = 512, progress: bool = False) -> tuple[str, dict]:
    """The page and its JSON summary for ``checkpoint`` run on ``images`` (paths)."""
    from tqdm.auto import tqdm

    model, info = load_checkpoint(checkpoint, format, aux=False, pam_impl="chunked")
    set_name, names, palette = class_set(classes or None, info.num_classes, info.class_names or names_beside(checkpoint))
    sections, records = [], []
    warning = model.untrained_attention()
    sections.append(("Checkpoint", (f'<p class="warn">Warning: {html.escape(warning)}.</p>' if warning else "")
                     + html_table(["checkpoint", "value"], info_rows(info))
                     + f"<p>Classes: <b>{html.escape(set_name)}</b> ({len(names)}). Learned scales: "
                     + ", ".join(f"{SCALE_WORDS[k]} = {v:.4g}" for k, v in model.gammas().items() if v is not None)
                     + ".</p>"))

    for path in tqdm(images, desc="checkpoint report", unit="img", disable=not progress):
        image = read_image(path)
        result = predict_image(model, image)
        pngs = figures.prediction_pngs(image, result, names, palette, title=os.path.basename(path))
        hist = histogram(result["label"], names)
        records.append({"file": path, "size": list(image.shape[:2]), "histogram": hist,
                        "queries": [list(q) for q in result["queries"]]})
        top = ", ".join(f"{n} {100 * c / result['label'].size:.1f}%" for n, c in list(hist.items())[:8])
        sections.append((f"{os.path.basename(path)} ({image.shape[0]}×{image.shape[1]})",
                         f"<p>Classes by area: {html.escape(top)}</p>"
                         + '<div class="row">' + html_img(png_uri(pngs["overlay"]), "overlay with legend")
                         + html_img(png_uri(pngs["segmentation"]), "colour segmentation") + "</div>"
                         + legend_html(names, palette, [names.index(n) for n in hist])
                         + html_img(png_uri(pngs["attention"]), "attention: PAM rows and CAM matrix")
                         + "<p>Explore: point at any pixel for its PAM row, click to pin one (danet explore).</p>"
                         + iframe(explorer_html(model, image, names, palette, title=os.path.basename(path),
                                                source=os.path.basename(checkpoint)))))

    parity = None
    if info.attention == "both":
        small = _resized(read_image(images[0]), check_size)
        parity = {dt: check(model, info, small, dt) for dt in BARS}
        rows = [[stage] + [f"{parity[dt]['stages'][stage]:.2e}" for dt in BARS] for stage in parity["float64"]["stages"]]
        rows.append(["overall"] + [f"{parity[dt]['overall_max_rel_error']:.2e} "
                                   f"({'within' if parity[dt]['overall_max_rel_error'] <= bar else 'ABOVE'} {bar:.0e})"
                                   for dt, bar in BARS.items()])
        rows.append(["seconds NumPy / PyTorch"] + [f"{parity[dt]['seconds']['numpy']:.2f} / "
                                                   f"{parity[dt]['seconds']['torch']:.2f}" for dt in BARS])
        sections.append(("NumPy reference vs PyTorch, stage by stage",
                         f"<p>refimpl.danet_forward against the PyTorch model on {html.escape(os.path.basename(images[0]))}"
                         f" at {small.shape[0]}×{small.shape[1]}; error = max|NumPy − torch| / max|torch|.</p>"
                         + html_table(["stage", "float64", "float32"], rows)))
    else:
        sections.append(("NumPy reference vs PyTorch", f"<p>Not run: the NumPy reference is the whole DANet, "
                                                       f"this checkpoint has attention = {info.attention!r}.</p>"))

    summary = {"checkpoint": checkpoint, "info": dataclasses.asdict(info), "classes": set_name,
               "class_names": list(names), **model.gammas(), "images": records, "parity": parity,
               "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "environment": environment()}
    title = f"DANet checkpoint report: {os.path.basename(checkpoint)}"
    intro = (f"<p>{len(images)} image(s), normalised with the ImageNet mean and std; whole-image inference, "
             "PAM in query blocks.</p>")
    page = html_page(title, intro, sections)
    return page, summary
