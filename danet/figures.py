"""Figures of a prediction: the colour segmentation, the overlay on the photo with a legend, and the
attention figure (PAM rows of query pixels over the image, and the CAM matrix).

Matplotlib is imported inside the functions (with the non-interactive Agg backend), so importing
``danet`` never loads it. ``png_bytes`` renders a figure; ``save_png`` writes one atomically.
"""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours of ``palette`` (K, 3); indices >= K are black."""
    palette = np.asarray(palette, np.uint8)
    out = np.zeros(label.shape + (3,), np.uint8)                       # (H, W, 3)
    valid = (label >= 0) & (label < len(palette))
    out[valid] = palette[label[valid]]
    return out


def _size(H: int, W: int, longest: float) -> tuple[float, float]:
    """(width, height) in inches of a panel showing an H×W image, its longer side ``longest``."""
    return (longest, max(longest * H / W, 1.0)) if W >= H else (max(longest * W / H, 1.0), longest)


def overlay_figure(image: np.ndarray, label: np.ndarray, names, palette, alpha: float = 0.55,
                   title: str = "", max_legend: int = 24):
    """The photo with the colour segmentation blended over it and a legend of the classes present
    (largest area first; at most ``max_legend`` entries, the rest counted)."""
    from matplotlib.patches import Patch

    plt = _plt()
    H, W = label.shape
    blend = (1 - alpha) * image.astype(np.float32) + alpha * colorize(label, palette).astype(np.float32)
    w, h = _size(H, W, 7)
    fig, ax = plt.subplots(figsize=(w + 2.5, h))                       # + room for the legend
    ax.imshow(blend.astype(np.uint8))
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    counts = np.bincount(label.ravel(), minlength=len(names))[:len(names)]
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    handles = [Patch(color=np.asarray(palette[c]) / 255, label=f"{names[c]} ({100 * counts[c] / label.size:.1f}%)")
               for c in present[:max_legend]]
    if len(present) > max_legend:
        handles.append(Patch(color="white", label=f"... {len(present) - max_legend} more classes"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def attention_figure(image: np.ndarray, queries, rows, cam=None, gammas=None, title: str = "", cam_order=None):
    """PAM attention rows of the query pixels over the photo, one panel each, and the CAM matrix.

    Parameters
    ----------
    image : (H, W, 3) uint8 photo.
    queries : [(y, x), ...] query pixels, marked with a white cross.
    rows : (q, h, w) array, row k the attention of query k over the feature grid (None: no PAM),
        drawn stretched over the photo with bilinear smoothing, its peak circled in cyan.
    cam : (C, C) channel attention matrix (None: no CAM).
    gammas : ``{"gamma_pam": γ, "beta_cam": β}`` shown in the titles.
    cam_order : (C,) the channel order to show ``cam`` in, rows and columns alike
        (:func:`danet.attention_maps.cam_order`, clustered; None: the network's order), said in the title.
    """
    plt = _plt()
    H, W = image.shape[:2]
    gammas = gammas or {}
    w, h = _size(H, W, 3.6 if W < 3 * H else 10)                     # a wide strip gets a wide panel
    side = max(h, 3.0) if cam is not None else h                      # the C×C matrix stays legible beside a strip
    widths = ([w + 0.8] * (0 if rows is None else len(queries)) + ([side + 1.2] if cam is not None else [])) or [w]
    if W >= 3 * H and len(widths) > 1:                                 # wide strips: panels stacked, not side by side
        heights = [h + 0.6] * (len(widths) - (cam is not None)) + ([side + 0.6] if cam is not None else [])
        fig, axes = plt.subplots(len(heights), 1, figsize=(w + 1.5, sum(heights) + 0.3), squeeze=False,
                                 gridspec_kw={"height_ratios": heights})
    else:
        fig, axes = plt.subplots(1, len(widths), figsize=(sum(widths), side + 0.9), squeeze=False,
                                 gridspec_kw={"width_ratios": widths})
    axes = list(axes.ravel())
    if rows is not None:
        g = gammas.get("gamma_pam")
        for k, (y, x) in enumerate(queries):
            ax = axes.pop(0)
            ax.imshow(image)
            row = np.asarray(rows[k])                                  # (h, w)
            im = ax.imshow(row, cmap="inferno", alpha=0.45, interpolation="bilinear",
                           extent=(-0.5, W - 0.5, H - 0.5, -0.5))
            i, j = np.unravel_index(np.argmax(row), row.shape)         # the peak cell, at its centre pixel
            ax.plot([(j + 0.5) * W / row.shape[1] - 0.5], [(i + 0.5) * H / row.shape[0] - 0.5], marker="o",
                    mfc="none", color="cyan", markersize=12, mew=2)
            ax.plot([x], [y], marker="+", color="white", markersize=14, mew=2)
            ax.set_title(f"PAM row of pixel (y={y}, x={x})" + (f", γ={g:.3g}" if g is not None else ""), fontsize=9)
            ax.axis("off")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if cam is not None:
        ax = axes.pop(0)
        b = gammas.get("beta_cam")
        order = np.arange(len(cam)) if cam_order is None else np.asarray(cam_order)
        im = ax.imshow(np.asarray(cam)[np.ix_(order, order)], cmap="viridis")
        ax.set_title(f"CAM attention ({cam.shape[0]}×{cam.shape[1]}, "
                     + ("network" if cam_order is None else "clustered") + " channel order)"
                     + (f", β={b:.3g}" if b is not None else ""), fontsize=9)
        ax.set_xlabel("channel attended to", fontsize=8)
        ax.set_ylabel("channel", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    for ax in axes:                                                    # a model with neither module
        ax.text(0.5, 0.5, "no attention module", ha="center", va="center")
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def prediction_pngs(image: np.ndarray, result: dict, names, palette, title: str = "") -> dict:
    """The three PNGs of one prediction (``result`` of :func:`danet.prediction.predict_image`):
    ``segmentation`` (colours at the image's size), ``overlay`` (with legend), ``attention``."""
    gammas = {k: result.get(k) for k in ("gamma_pam", "beta_cam")}
    return {"segmentation": array_png(colorize(result["label"], palette)),
            "overlay": png_bytes(overlay_figure(image, result["label"], names, palette, title=title)),
            "attention": png_bytes(attention_figure(image, result["queries"], result["pam_rows"], result["cam"],
                                                    gammas, title=title, cam_order=result.get("cam_order")))}


def array_png(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 array as PNG bytes, pixel for pixel."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def png_bytes(fig, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (tight bounding box); the figure is closed."""
    plt = _plt()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def save_png(data, path: str) -> str:
    """Write PNG ``data`` -- bytes, a figure, or an (H, W, 3) uint8 array -- to ``path`` atomically
    (a temporary name in the same folder, renamed into place)."""
    if isinstance(data, np.ndarray):
        data = array_png(data)
    elif not isinstance(data, bytes):
        data = png_bytes(data)
    write_bytes_atomic(path, data)
    return path


def write_bytes_atomic(path: str, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file in the same folder and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~umask)                                  # mkstemp's 0600 -> the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
