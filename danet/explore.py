"""The attention explorer: one self-contained HTML page per image that shows where DANet looks.

The page (``danet/templates/explorer.html``, data filled in here) holds the photo, the fused,
PAM-branch and CAM-branch predictions, the PAM attention rows of a grid of query cells and the
CAM matrix, all inline (no network, opens from ``file://`` and inside JupyterLab). Pointing at a
pixel shows its row of S = softmax(BᵀC) over the photo, the share of that row falling on each
predicted class, and γ; the CAM matrix shows each channel's top partners and β.

How the numbers are made
    * predictions and backbone features from one forward pass (:func:`danet.prediction.predict`);
    * PAM rows for the query grid with :func:`danet.attention_maps.pam_row_blocks`, ``QUERY_BLOCK``
      rows at a time (never the N×N matrix): every feature cell, or every s-th cell in both
      directions, s the smallest stride whose rows fit ``ROW_ELEMENTS`` numbers and, deflated
      and base64-encoded, :func:`row_bytes` (1.25 MiB at N = 4,096, at most 6 MiB);
    * each row r quantised to 8 bits with its own scale m = max_j r_j:
      q_j = round(255·r_j / m), shown as q_j·m/255, so |shown − r_j| ≤ m/510 (half a step m/255);
    * the quantised rows (and the CAM matrix, quantised the same way) deflate-compressed block by
      block as they are computed, and base64-encoded; the page inflates them with the browser's
      ``DecompressionStream``.

Python API: :func:`explorer_html` (model, uint8 image → the page as a string),
:func:`write_explorer` (→ a file, written atomically), :func:`iframe` (the page as an
``<iframe srcdoc>`` for a notebook).
"""

from __future__ import annotations

import base64
import html
import io
import json
import zlib
from importlib import resources

import numpy as np
import torch

ROW_ELEMENTS = 64 * 2**20  # at most this many PAM-row numbers per page (64 MiB at 8 bits, before deflate)
ROW_BYTES_PER_CELL = 320   # encoded-row budget per feature cell: 1.25 MiB for N = 4,096 (a 512×512 image) ...
MIN_ROW_BYTES, MAX_ROW_BYTES = 2**18, 6 * 2**20   # ... within 256 KiB and 6 MiB (reached at N = 19,661)
QUERY_BLOCK = 256          # PAM rows computed at once: at most QUERY_BLOCK × N of S in memory
OVERLAY_ALPHA = 0.55


# --------------------------------------------------------------------------- rows, quantisation

def query_stride(h: int, w: int, budget: int = ROW_ELEMENTS) -> int:
    """The smallest stride s >= 1 whose query grid, ceil(h/s)·ceil(w/s) rows of N = h·w numbers, fits ``budget``."""
    s = 1
    while -(-h // s) * -(-w // s) * h * w > budget and (s < h or s < w):
        s += 1
    return s


def query_grid(h: int, w: int, s: int) -> tuple[list[int], list[int]]:
    """Query rows and columns of the feature grid for stride s: every s-th cell, starting at s // 2."""
    return list(range(min(s // 2, h - 1), h, s)), list(range(min(s // 2, w - 1), w, s))


def quantise_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative rows (q, n) -> (uint8 codes (q, n), float32 scales (q,)) with q_j = round(255·r_j/m), m = max r.

    :func:`dequantise_rows` gives back q_j·m/255, within m/510 of r_j (half a quantisation step m/255).
    """
    rows = np.asarray(rows, np.float32)
    scale = rows.max(axis=1)                                           # (q,)
    safe = np.where(scale > 0, scale, 1.0)[:, None]                    # (q, 1)
    codes = np.rint(np.clip(rows / safe, 0, 1) * 255).astype(np.uint8)  # (q, n)
    return codes, scale.astype(np.float32)


def dequantise_rows(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """What the page shows: codes (q, n) · scale (q,) / 255, in float64."""
    return codes.astype(np.float64) * (np.asarray(scale, np.float64)[:, None] / 255.0)


def _pack(array: np.ndarray, deflate: bool = False) -> str:
    """An array's bytes (little-endian, C order) as base64, deflated (zlib format) if asked."""
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return base64.b64encode(zlib.compress(data, 6) if deflate else data).decode("ascii")


def _image_uri(image, fmt: str, **options) -> str:
    """A PIL image as a ``data:`` URI."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _lut(name: str) -> str:
    """A matplotlib colour map as 256 RGB triples, packed."""
    from matplotlib import colormaps

    return _pack((colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8))


# --------------------------------------------------------------------------- the data of one page

BRANCHES = {"both": ("fused", "pam", "cam"), "pam": ("pam",), "cam": ("cam",), "none": ("fcn",)}


@torch.no_grad()
def _forward(model, image: np.ndarray):
    """One forward pass: the argmax label (H, W) of every output branch, the class count K and the
    backbone features A (1, C_in, h, w)."""
    from danet.prediction import predict
    from danet.preprocess import normalize

    caught = {}

    def catch(module, inputs, outputs):                                # argmax now: drop the logits early
        caught.setdefault("labels", [o.argmax(1)[0].numpy() for o in outputs])
        caught.setdefault("K", int(outputs[0].shape[1]))

    hook = model.register_forward_hook(catch)
    try:
        dtype = next(model.parameters()).dtype                         # a float64 model gets a float64 image
        _, A = predict(model, normalize(image, dtype))                # (1, K, H, W), (1, C_in, h, w)
    finally:
        hook.remove()
    return dict(zip(BRANCHES[model.head.attention], caught["labels"])), caught["K"], A


def _cell_maps(model, H: int, W: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """For every image row y and column x, the feature row and column nearest to it (the model's convention)."""
    from danet.attention_maps import feature_cell

    rows = np.array([feature_cell(y, 0, H, W, h, w, model.align_corners)[0] for y in range(H)], np.uint16)
    cols = np.array([feature_cell(0, x, H, W, h, w, model.align_corners)[1] for x in range(W)], np.uint16)
    return rows, cols


def _cell_labels(label: np.ndarray, rows: np.ndarray, cols: np.ndarray, h: int, w: int, K: int) -> np.ndarray:
    """The predicted class of each feature cell (h·w,): the most frequent label among the pixels nearest to it."""
    cell = rows.astype(np.int64)[:, None] * w + cols.astype(np.int64)[None, :]   # (H, W)
    counts = np.bincount((cell * K + label).ravel(), minlength=h * w * K)      # (h·w·K,)
    return counts.reshape(h * w, K).argmax(1).astype(np.uint16)               # (h·w,)


def _branch(label: np.ndarray, names, palette) -> dict:
    """One prediction as an indexed PNG and its legend [name, colour, percent] (largest first)."""
    from PIL import Image

    from danet.figures import colorize
    from danet.prediction import histogram

    if len(palette) > 256:                                             # an indexed PNG holds 256 colours
        img = Image.fromarray(colorize(label, palette))
    else:
        img = Image.fromarray(label.astype(np.uint8), "P")
        img.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    index = {n: k for k, n in enumerate(names)}
    legend = [[name, [int(v) for v in palette[index[name]]], round(100 * count / label.size, 2)]
              for name, count in histogram(label, names).items()]
    return {"png": _image_uri(img, "PNG", optimize=True), "legend": legend}


def _packed_rows(model, A: torch.Tensor, cells, max_bytes: int) -> tuple[str, np.ndarray] | None:
    """The quantised rows of ``cells``, deflated block by block as they are computed, base64-encoded,
    and their scales; None as soon as the encoded rows would exceed ``max_bytes``."""
    from danet.attention_maps import pam_row_blocks

    deflate, parts, scales, size = zlib.compressobj(6), [], [], 0
    for block in pam_row_blocks(model, A, cells, QUERY_BLOCK):        # (n, h, w)
        codes, m = quantise_rows(block.reshape(len(block), -1).numpy())
        parts.append(deflate.compress(codes.tobytes()))
        scales.append(m)
        size += len(parts[-1])
        if 4 * size / 3 > max_bytes:
            return None
    parts.append(deflate.flush())
    encoded = base64.b64encode(b"".join(parts)).decode("ascii")
    return (encoded, np.concatenate(scales)) if len(encoded) <= max_bytes else None


def row_bytes(N: int) -> int:
    """The page's budget for its encoded PAM rows: ROW_BYTES_PER_CELL · N, within [MIN_ROW_BYTES, MAX_ROW_BYTES]."""
    return int(min(max(ROW_BYTES_PER_CELL * N, MIN_ROW_BYTES), MAX_ROW_BYTES))


def _pam_data(model, A: torch.Tensor, budget: int, max_bytes: int | None) -> dict | None:
    """The quantised PAM rows of the finest query grid that fits: at most ``budget`` numbers and,
    deflated and encoded, at most ``max_bytes`` (default :func:`row_bytes`); the stride grows until both hold."""
    if not hasattr(model.head, "sa"):
        return None
    h, w = A.shape[2:]
    max_bytes = max_bytes or row_bytes(h * w)
    s = query_stride(h, w, budget)
    while True:
        qi, qj = query_grid(h, w, s)
        packed = _packed_rows(model, A, [(i, j) for i in qi for j in qj], max_bytes)
        if packed is not None or (s >= h and s >= w):
            break
        s += 1
    if packed is None:
        raise ValueError(f"explorer: even one PAM row of N = {h * w} cells exceeds {max_bytes} bytes")
    return {"gamma": model.gammas()["gamma_pam"], "stride": s, "qi": qi, "qj": qj,
            "codes": packed[0], "scales": _pack(packed[1])}


def _cam_data(model, A: torch.Tensor) -> dict | None:
    """The CAM matrix (C, C), quantised per row like the PAM rows."""
    from danet.attention_maps import cam_matrix

    cam = cam_matrix(model, A)
    if cam is None:
        return None
    codes, scales = quantise_rows(cam.numpy())
    return {"beta": model.gammas()["beta_cam"], "C": int(cam.shape[0]), "variant": model.head.sc.variant,
            "codes": _pack(codes, deflate=True), "scales": _pack(scales)}


def explorer_data(model, image: np.ndarray, names=None, palette=None, title: str = "", source: str = "",
                  budget: int = ROW_ELEMENTS, max_bytes: int | None = None) -> dict:
    """Everything the page shows of one uint8 (H, W, 3) image, as JSON-ready values (module docstring)."""
    from PIL import Image

    from danet.classes import class_set

    H, W = image.shape[:2]
    labels, K, A = _forward(model, image)
    h, w = A.shape[2:]
    if names is None or palette is None:
        _, names, palette = class_set(None, K)
    rows, cols = _cell_maps(model, H, W, h, w)
    first = next(iter(labels.values()))                                # fused for a DANet
    pam, cam = _pam_data(model, A, budget, max_bytes), _cam_data(model, A)
    grid = "no PAM" if pam is None else (f"{len(pam['qi'])}×{len(pam['qj'])} query cells "
                                         + ("(every feature cell)" if pam["stride"] == 1 else
                                            f"(every {pam['stride']}th cell in both directions)"))
    about = (f"Where DANet looks: the PAM attention row (softmax(BᵀC), one per query cell) and the CAM matrix of "
             f"checkpoint {source or 'in memory'} on image {title or 'in memory'} ({H}×{W} pixels), feature grid "
             f"{h}×{w} (N = {h * w}), {grid}. Rows computed {QUERY_BLOCK} queries at a time, never N×N; each row "
             f"quantised to 8 bits with its own scale (shown value within half a step, row max/510, of the "
             f"model's float32 row) and deflated. Class shares use the fused prediction's class of each feature "
             f"cell.")
    return {"title": title, "about": about, "H": H, "W": W, "h": h, "w": w, "names": list(names),
            "palette": [[int(v) for v in c] for c in palette],
            "photo": _image_uri(Image.fromarray(image), "JPEG", quality=88),
            "branches": {b: _branch(lab, names, palette) for b, lab in labels.items()},
            "rowmap": _pack(rows), "colmap": _pack(cols),
            "cell_labels": _pack(_cell_labels(first, rows, cols, h, w, K)),
            "pam": pam, "cam": cam, "lut_pam": _lut("inferno"), "lut_cam": _lut("viridis"),
            "overlay_alpha": OVERLAY_ALPHA}


# --------------------------------------------------------------------------- the page

def render(data: dict) -> str:
    """The page: the template with ``data`` as inline JSON (``<`` escaped, so no ``</script>`` can end it)."""
    template = resources.files("danet").joinpath("templates/explorer.html").read_text(encoding="utf-8")
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return template.replace("__DANET_DATA__", payload).replace("__DANET_TITLE__", html.escape(data["title"]))


def explorer_html(model, image: np.ndarray, names=None, palette=None, title: str = "", source: str = "") -> str:
    """The explorer page of one uint8 (H, W, 3) image for an eval-mode DANet, as a string.

    ``names``/``palette`` default to K generic classes; ``title`` (e.g. the image's file name) and
    ``source`` (e.g. the checkpoint's) appear in the page's description line.
    """
    return render(explorer_data(model, image, names, palette, title, source))


def write_explorer(path: str, model, image: np.ndarray, names=None, palette=None, title: str = "",
                   source: str = "") -> str:
    """:func:`explorer_html` written to ``path`` atomically; returns ``path``."""
    from danet.figures import write_bytes_atomic

    write_bytes_atomic(path, explorer_html(model, image, names, palette, title, source).encode("utf-8"))
    return path


UNTRUSTED_NOTE = (
    "The attention explorer is not shown: this output is untrusted, so its frame and script were removed "
    "(JupyterLab does this to the stored HTML outputs of a notebook it has not trusted, e.g. one just cloned). "
    "Run the cell to show it, or trust the notebook (<code>jupyter trust NOTEBOOK.ipynb</code>, or "
    "\u201cTrust Notebook\u201d in JupyterLab's command palette) and reopen it.")


FIT_SCRIPT = """<script>(function (me) {
  var frame = me.previousElementSibling;
  frame.previousElementSibling.remove();
  window.addEventListener("message", function (e) {
    var h = e.source === frame.contentWindow && e.data && e.data.danetExplorerHeight;
    if (h > 0) frame.style.height = h + "px";
  });
})(document.currentScript)</script>"""


def iframe(page: str, height: int = 820) -> str:
    """The page inside an ``<iframe srcdoc>``, for ``IPython.display.HTML`` in a notebook or a report.

    Before the frame, a note says what to do where the frame is stripped (JupyterLab's sanitiser on an
    untrusted notebook's stored outputs). Wherever scripts run, the script after the frame removes the
    note and fits the frame's height (``height`` until then) to the height the page reports.
    """
    return (f'<p class="danet-explorer-note">{UNTRUSTED_NOTE}</p>'
            f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:{int(height)}px;'
            f'border:1px solid #ddd" sandbox="allow-scripts"></iframe>{FIT_SCRIPT}')
