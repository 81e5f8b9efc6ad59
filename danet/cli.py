"""The ``danet`` command (also ``python -m danet``): run an imported DANet checkpoint on images.

::

    danet predict IMAGE... --checkpoint FILE [--format auto] [--classes NAME|K] [--out DIR]
                           [--query Y,X ...] [--sliding CROP,STRIDE] [--flip]
    danet check IMAGE --checkpoint FILE [--format auto] [--dtype float64|float32] [--json FILE]
    danet export --checkpoint FILE --out weights.npz [--format auto] [--dtype float32|float64]
    danet explore IMAGE... --checkpoint FILE [--format auto] [--classes NAME|K] [--out DIR]

``predict`` writes, per image (named after its stem), ``<stem>_segmentation.png`` (class colours),
``<stem>_overlay.png`` (the photo with the colours and a legend) and ``<stem>_attention.png`` (the
PAM rows of the query pixels over the photo, and the CAM matrix in clustered channel order, as the
FullReport shows it: :func:`danet.attention_maps.cam_order`), then ``predictions.json``.
``check`` runs the NumPy reference (``refimpl.danet_forward``) and PyTorch on one image and prints
the max relative error of every stage; it exits 3 if the overall error is above the project's bar
(1e-10 in float64, 1e-4 in float32). ``export`` writes the network's weights as an ``.npz`` for
``refimpl``. ``explore`` writes ``<stem>_explorer.html`` per image, a self-contained interactive page
of the PAM rows, the CAM matrix and the three predictions (:mod:`danet.explore`).

Checkpoints are read by :func:`danet.load_checkpoint` (formats project, official, mmseg,
torchvision), with the auxiliary head left out (unused at inference) and the PAM computed in query
blocks (``pam_impl="chunked"``), so memory stays bounded on a large image.

Errors in the input -- a missing or unreadable image or checkpoint, a checkpoint that is not a
DANet, a bad option -- are one line on stderr naming the thing, exit status 2 for a bad argument
and 1 for a bad file. Every input is checked before anything is written, and every file is
written under a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys

from danet.numerics import TOLERANCE


class UsageError(Exception):
    """A bad command-line argument (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):                 # one line, no usage block
        if message.endswith("required: command"):
            message += " (predict, explore, check or export; danet --help says what each does)"
        raise UsageError(f"{self.prog}: error: {message}")


def _pair(what: str, names: str):
    def parse(text: str) -> tuple[int, int]:
        m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", text)
        if not m:
            raise argparse.ArgumentTypeError(f"{what} must be {names} (two integers >= 0), got {text!r}")
        return int(m.group(1)), int(m.group(2))

    return parse


def _sliding(text: str) -> tuple[int, int]:
    crop, stride = _pair("--sliding", "CROP,STRIDE")(text)
    if not 1 <= stride <= crop:
        raise argparse.ArgumentTypeError(f"--sliding {text!r}: need 1 <= STRIDE <= CROP (windows must overlap "
                                         f"or touch), got crop {crop}, stride {stride}")
    return crop, stride


def build_parser() -> argparse.ArgumentParser:
    from danet.checkpoint import FORMATS
    from danet.classes import CLASS_NAMES

    parser = _Parser(prog="danet", description="Run a DANet checkpoint: predict, check against NumPy, export.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p):
        p.add_argument("--checkpoint", required=True, help="checkpoint file")
        p.add_argument("--format", default="auto", choices=("auto",) + FORMATS, help="checkpoint format (default auto)")

    p = sub.add_parser("predict", help="segment images; write colour maps, overlays and attention figures",
                       description="Segment images with a DANet checkpoint. Images are normalised with the ImageNet "
                                   "mean and std on RGB in [0, 1] (mmsegmentation's 0-255 mean/std are the same map).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    common(p)
    p.add_argument("--classes", default=None, help=" | ".join([*CLASS_NAMES, "K"]) + " (default: from the "
                                                   "checkpoint, or the params.json beside a project checkpoint, "
                                                   "else K generic classes)")
    p.add_argument("--out", default="danet-predictions", help="output folder (default danet-predictions)")
    p.add_argument("--query", nargs="+", action="extend", type=_pair("--query", "Y,X"), metavar="Y,X",
                   help="query pixels of the attention figure (default: one on each large predicted region)")
    p.add_argument("--sliding", type=_sliding, metavar="CROP,STRIDE", help="sliding-window inference")
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    _max_pixels(p)
    p.set_defaults(run=run_predict)

    p = sub.add_parser("explore", help="one self-contained interactive attention page (HTML) per image",
                       description="Write <stem>_explorer.html per image: point at a pixel to see its PAM attention "
                                   "row, the classes it gathers from, and the CAM matrix (danet.explore).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    common(p)
    p.add_argument("--classes", default=None, help="as for predict")
    p.add_argument("--out", default="danet-explorer", help="output folder (default danet-explorer)")
    _max_pixels(p)
    p.set_defaults(run=run_explore)

    p = sub.add_parser("check", help="NumPy reference vs PyTorch on one image, stage by stage")
    p.add_argument("image", metavar="IMAGE")
    common(p)
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON")
    _max_pixels(p)
    p.set_defaults(run=run_check)

    p = sub.add_parser("export", help="the network's weights as .npz for refimpl")
    common(p)
    p.add_argument("--out", required=True, metavar="FILE.npz")
    p.add_argument("--dtype", default=None, choices=("float32", "float64"), help="default: as stored")
    p.set_defaults(run=run_export)
    return parser


def _count(text: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text):
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0: no limit), got {text!r}")
    return int(text)


def _max_pixels(p) -> None:
    from danet.images import DEFAULT_MAX_PIXELS

    p.add_argument("--max-pixels", type=_count, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse an image of more pixels (default {DEFAULT_MAX_PIXELS:,}; 0: no limit)")


def main(argv=None) -> int:
    """Run the command; returns the exit status (0 ok, 1 bad file, 2 bad argument, 3 check failed)."""
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except UsageError as e:
        return _fail(e, 2)
    except (ValueError, OSError, RuntimeError) as e:      # includes refimpl.WeightError, FileNotFoundError
        return _fail(e, 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def one_line(error) -> str:
    """An error's message on one line (its whitespace runs, newlines included, made one space)."""
    return " ".join(str(error).split()) or type(error).__name__


def _fail(error, status: int) -> int:
    text = one_line(error)
    print(text if text.startswith("danet") else f"danet: error: {text}", file=sys.stderr)
    return status


def _writable(path: str, flag: str, kind: str) -> None:
    """Refuse an output path before any work: ``kind`` ("folder" or "file") found as the other kind,
    or a place that cannot be written (permissions, a read-only file system)."""
    if os.path.exists(path) and os.path.isdir(path) != (kind == "folder"):
        found = "a folder" if os.path.isdir(path) else "a file"
        raise UsageError(f"{flag} {path!r}: expected a {kind}, found {found}")
    place = os.path.abspath(path if kind == "folder" else os.path.dirname(os.path.abspath(path)))
    while not os.path.exists(place):                      # the folder that would hold what is created
        place = os.path.dirname(place)
    if not os.path.isdir(place):
        raise UsageError(f"{flag} {path!r}: expected a {kind} path, but '{place}' is a file")
    if not os.access(place, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path!r}: cannot write in '{place}' (permission denied or read-only)")


def _load(args, **overrides):
    from danet.checkpoint import assumed_settings, load_checkpoint

    model, info = load_checkpoint(args.checkpoint, args.format, aux=False, pam_impl="chunked", **overrides)
    if warning := assumed_settings(info):
        print(f"danet: warning: {warning}", file=sys.stderr)
    return model, info


# --------------------------------------------------------------------------- predict

def run_predict(args) -> int:
    from tqdm.auto import tqdm

    from danet import figures
    from danet.images import read_image
    from danet.prediction import histogram, predict_image

    stems = _stems(args.images)                           # validate everything before writing anything
    _writable(args.out, "--out", "folder")
    sizes = {path: read_image(path, args.max_pixels).shape[:2] for path in args.images}
    for path, (H, W) in sizes.items():
        for y, x in args.query or ():
            if not (y < H and x < W):
                raise UsageError(f"--query {y},{x} is outside image '{path}' of {H}×{W} pixels (H×W)")
    model, info = _load(args)
    _warn_untrained(model)
    set_name, names, palette = _classes(args, info)

    os.makedirs(args.out, exist_ok=True)
    records = []
    for stem, path in tqdm(stems.items(), desc="predict", unit="img", disable=None):
        image = read_image(path, args.max_pixels)
        result = predict_image(model, image, args.query, args.sliding, args.flip)
        written = {}
        for kind, png in figures.prediction_pngs(image, result, names, palette, title=os.path.basename(path)).items():
            written[kind] = figures.save_png(png, os.path.join(args.out, f"{stem}_{kind}.png"))
        records.append({"file": path, "size": list(image.shape[:2]), "histogram": histogram(result["label"], names),
                        "queries": [list(q) for q in result["queries"]],
                        "query_cells": [list(c) for c in result["cells"]],
                        "gamma_pam": result["gamma_pam"], "beta_cam": result["beta_cam"], "outputs": written})
    summary = {"checkpoint": info.file, "format": info.format, "backbone": info.backbone,
               "num_classes": info.num_classes, "classes": set_name, "class_names": list(names),
               "sliding": list(args.sliding) if args.sliding else None, "flip": args.flip, "images": records}
    _write_json(os.path.join(args.out, "predictions.json"), summary)
    print(f"danet predict: {len(records)} image(s) -> {os.path.abspath(args.out)} (predictions.json)")
    return 0


def _stems(images) -> dict:
    """``{stem: path}`` of the images, refusing two with the same stem (their outputs would collide)."""
    stems = {}
    for path in images:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise UsageError(f"images '{stems[stem]}' and '{path}' have the same name '{stem}': their outputs "
                             f"would overwrite each other")
        stems[stem] = path
    return stems


def _classes(args, info):
    """(set name, class names, palette): --classes, else the checkpoint's names, else the params.json beside it."""
    from danet.classes import class_set, names_beside

    try:
        return class_set(args.classes, info.num_classes, info.class_names or names_beside(args.checkpoint))
    except ValueError as e:
        raise UsageError(str(e)) from None


# --------------------------------------------------------------------------- explore

def run_explore(args) -> int:
    from tqdm.auto import tqdm

    from danet.explore import write_explorer
    from danet.images import read_image

    stems = _stems(args.images)                           # validate everything before writing anything
    _writable(args.out, "--out", "folder")
    for path in args.images:
        read_image(path, args.max_pixels)
    model, info = _load(args)
    _warn_untrained(model)
    _, names, palette = _classes(args, info)
    os.makedirs(args.out, exist_ok=True)
    for stem, path in tqdm(stems.items(), desc="explore", unit="img", disable=None):
        image = read_image(path, args.max_pixels)
        write_explorer(os.path.join(args.out, f"{stem}_explorer.html"), model, image, names, palette,
                       title=os.path.basename(path), source=os.path.basename(info.file))
    print(f"danet explore: {len(stems)} page(s) -> {os.path.abspath(args.out)}")
    return 0


# --------------------------------------------------------------------------- check, export

def run_check(args) -> int:
    from danet.images import read_image
    from danet.network_check import check

    if args.json:
        _writable(args.json, "--json", "file")
    image = read_image(args.image, args.max_pixels)
    model, info = _load(args)
    _warn_untrained(model)
    result = check(model, info, image, args.dtype)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["tolerance"] = TOLERANCE[args.dtype]
    result["passed"] = result["overall_max_rel_error"] <= result["tolerance"]
    result.update(checkpoint=info.file, format=info.format, image=args.image)
    width = max(len(s) for s in result["stages"])
    print(f"NumPy (refimpl.danet_forward) vs PyTorch, {args.dtype}, image {args.image} "
          f"({result['image_size'][0]}×{result['image_size'][1]}); error = max|a−b| / max|torch|")
    for name, err in result["stages"].items():
        print(f"  {name:<{width}}  {err:.3e}")
    print(f"  {'overall':<{width}}  {result['overall_max_rel_error']:.3e}  "
          f"({'within' if result['passed'] else 'ABOVE'} {result['tolerance']:.0e})")
    print(f"time: NumPy {result['seconds']['numpy']:.2f} s, PyTorch {result['seconds']['torch']:.2f} s; "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    if args.json:
        _write_json(args.json, result)
        print(f"danet check: result -> {os.path.abspath(args.json)}")
    return 0 if result["passed"] else 3


def run_export(args) -> int:
    import numpy as np

    from danet.export import export_npz

    if not args.out.endswith(".npz"):
        raise UsageError(f"--out {args.out!r}: the file name must end in .npz")
    _writable(args.out, "--out", "file")
    model, info = _load(args)
    export_npz(model, args.out, dtype=None if args.dtype is None else getattr(np, args.dtype))
    print(f"danet export: {len(model.state_dict())} arrays of the {info.backbone} DANet ({info.format} "
          f"checkpoint) -> {os.path.abspath(args.out)}")
    return 0


def _warn_untrained(model) -> None:
    warning = model.untrained_attention()
    if warning:
        print(f"danet: warning: {warning}", file=sys.stderr)


def _write_json(path: str, obj) -> None:
    from danet.figures import write_bytes_atomic

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())
