"""The HTML report (self-contained: figures embedded as PNG data URIs) and its JSON summary."""

from __future__ import annotations

import base64
import html
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from danet import figures  # noqa: E402
from danet.classes import CLASS_NAMES, SYNTHETIC_COLOURS, class_set  # noqa: E402
from danet.attention_maps import cam_maps, cam_order, feature_cell, pam_rows  # noqa: E402
from pipeline.artifacts import environment, read_jsonl  # noqa: E402
from pipeline.build import load_dataset, load_trained  # noqa: E402
from pipeline.datasets import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from pipeline.knockout import cell_labels, key_share, knock_out  # noqa: E402

# Paper, Table 1 (Cityscapes val, mIoU %): the ablation this pipeline repeats on its own data.
PAPER_ABLATION = {
    "backbone": "ResNet-50 (ResNet-101 in brackets)", "dataset": "Cityscapes val",
    "none": {"miou": 70.03, "resnet101": 72.54}, "pam": {"miou": 75.74}, "cam": {"miou": 74.28},
    "both": {"miou": 76.34, "resnet101": 77.57},
}
LABELS = {"none": "dilated FCN (no attention)", "pam": "PAM only", "cam": "CAM only", "both": "DANet (PAM + CAM)"}
MODELS = ("none", "pam", "cam", "both")            # baseline first, as the paper's Table 1
MODEL_COLOURS = {"none": "#7f7f7f", "pam": "#ff7f0e", "cam": "#2ca02c", "both": "#9467bd"}
KEYED = ("red-keyed shape", "blue-keyed shape")    # the built-in data's classes decided by the key


def png_uri(data: bytes) -> str:
    """PNG bytes as a data URI: the page embeds every figure, so it is one self-contained file."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _png(fig) -> str:
    return png_uri(figures.png_bytes(fig))


def html_img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def denormalize(image: torch.Tensor) -> np.ndarray:
    """Normalised (3, H, W) tensor -> (H, W, 3) uint8 photo."""
    x = image.permute(1, 2, 0).numpy() * IMAGENET_STD + IMAGENET_MEAN
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def html_table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v, digits=3):
    return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def query_pixels(label: np.ndarray, synthetic: bool, k: int) -> list[tuple[int, int]]:
    """Pixels whose attention rows are shown: on the built-in data a pixel of each keyed shape
    (class 1 or 2); elsewhere a pixel of the rarest labelled class and the image centre."""
    H, W = label.shape
    classes = [1, 2] if synthetic else [c for c in np.unique(label) if c < k]
    picks = []
    if synthetic:
        ys, xs = np.nonzero(np.isin(label, classes))
        if len(ys):
            i = np.argsort(xs)[len(xs) // 2]
            picks.append((int(ys[i]), int(xs[i])))
    elif classes:
        rare = min(classes, key=lambda c: int((label == c).sum()))
        ys, xs = np.nonzero(label == rare)
        picks.append((int(ys[len(ys) // 2]), int(xs[len(xs) // 2])))
    picks.append((H // 2, W // 2) if not picks else picks[-1])
    return list(dict.fromkeys(picks))


@torch.no_grad()
def attention_figures(model, dataset, n_images: int, synthetic: bool, title: str):
    """Per image, the PAM attention row of one query pixel over the photo (the row computed at feature
    resolution, q×N, by :func:`danet.attention_maps.pam_rows`) with its share per class beside each class's
    share of the area; the CAM matrix averaged over the images, channels in clustered order
    (:func:`danet.attention_maps.cam_order` of the mean energy, as ``danet predict`` shows one image's), if the
    model has CAM. Returns (PAM figure URIs, CAM figure URI or None,
    records, mean CAM matrix in the original channel order or None)."""
    model.eval()
    k = dataset.NUM_CLASSES
    uris, cams, energies, records = [], [], [], []
    for i in range(min(n_images, len(dataset))):
        image, label = dataset[i]
        A = model.features(image[None])                               # (1, C_in, h, w)
        (h, w), (H, W) = A.shape[2:], label.shape
        queries = query_pixels(label.numpy(), synthetic, k)[:1]
        cells = [feature_cell(y, x, H, W, h, w, model.align_corners) for y, x in queries]
        rows = pam_rows(model, A, cells)                              # (1, h, w)
        cam = cam_maps(model, A)                                      # (attention, energy X) or None
        if cam is not None:
            cams.append(cam[0].numpy())                               # (C_i, C_i)
            energies.append(cam[1].numpy())                           # X = A·Aᵀ (C_i, C_i)
        fig = figures.attention_figure(denormalize(image), queries, rows.numpy(), None, model.gammas(),
                                       title=f"{title}: val image {i}, query pixel at the white cross")
        uris.append(_png(fig))
        grid = cell_labels(label.numpy(), h, w)
        records.append({"image": i, "query_pixel": list(queries[0]), "max_attention": float(rows[0].max()),
                        "attention_on_class": _mass_per_class(rows[0].numpy(), label.numpy(), k),
                        "area_of_class": {str(c): float((grid == c).mean()) for c in range(k) if np.any(grid == c)}})
    if not cams:
        return uris, None, records, None
    cam = np.mean(cams, axis=0)                                       # (C_i, C_i)
    order = cam_order(np.mean(energies, axis=0))
    fig = figures.attention_figure(denormalize(image), [], None, cam, model.gammas(), cam_order=order,
                                   title=f"{title}: CAM matrix, mean over {len(cams)} images")
    return uris, _png(fig), records, cam


def _mass_per_class(row: np.ndarray, label: np.ndarray, k: int) -> dict:
    """Share of one attention row (h, w) that falls on the feature cells of each class (the label at
    each cell's centre pixel, :func:`pipeline.knockout.cell_labels`)."""
    cells = cell_labels(label, *row.shape)
    return {str(c): float(row[cells == c].sum()) for c in range(k) if np.any(cells == c)}


def build_report(data: dict, preset, seed: int, runs: dict, ablation: dict, parity: dict,
                 cam_variant: str = "official") -> tuple[str, dict]:
    """The FullReport page and its JSON summary, from plain records.

    ``data`` is a dataset record (dataset.json); ``runs`` maps each attention mode to
    ``{"dir": its model directory, "train": its params.json, "eval": its eval.json}``; ``ablation``
    and ``parity`` are the contents of ablation.json and parity.json. The page tells the story in
    order: the result, the per-class IoU of the four models, the images, which module carries the
    key, what the attention looks at, training, the paper's numbers, the NumPy check, timings, set-up.
    """
    ctx = _context(data, preset, runs, cam_variant)
    model, pam_model, val = ctx["model"], ctx["pam_model"], ctx["val"]
    knocked = knock_out(model, val)
    pam_figs, cam_fig, records, cam = attention_figures(model, val, 3, ctx["synthetic"], "DANet")
    pam_only_figs, _, pam_only_records, _ = attention_figures(pam_model, val, 3, ctx["synthetic"], "PAM-only model")
    shares = ({"both": key_share(model, val), "pam": key_share(pam_model, val)} if ctx["synthetic"] else {})
    g = {**model.gammas(), "pam_only_gamma": pam_model.gammas()["gamma_pam"]}
    seconds = {a: training_seconds(r["train"]) for a, r in runs.items()}
    sections = [
        ("Per-class IoU of the four models", _per_class_section(ctx, ablation)),
        ("Validation images", _samples_section(ctx)),
        ("Which module carries the key", _carrier_section(ctx, g, knocked)),
        ("What the attention looks at", _attention_section(ctx, g, shares, (pam_only_figs, pam_only_records),
                                                           (pam_figs, records), cam_fig, cam_variant)),
        ("Explore the attention", _explorer_section(ctx)),
        ("Training curves", _curves_section(ctx)),
        ("Paper ablation, Fu et al. Table 1: Cityscapes val, not this data", _paper_section()),
        ("NumPy reference vs PyTorch on the trained model", _parity_section(parity)),
        ("Timings", _timings_section(seconds, runs, parity)),
        ("Dataset and configuration", _config_section(data, preset, seed, model)),
        ("Environment", html_table(["item", "value"], [[k_, v] for k_, v in environment().items()])),
    ]
    gain = ablation["both"]["miou"] - ablation["none"]["miou"]
    title = f"DANet report: {data['dataset']}, preset {preset.name}, seed {seed}"
    page = html_page(title, _headline(ctx, ablation), sections)
    summary = {
        "dataset": data["dataset"], "preset": preset.as_dict(), "seed": seed, "environment": environment(),
        "ablation": {a: {"miou": ablation[a]["miou"], "pixel_accuracy": ablation[a]["pixel_accuracy"]}
                     for a in MODELS},
        "per_class_iou_by_model": {a: ablation[a]["per_class_iou"] for a in MODELS},
        "danet_minus_fcn_miou": gain, "per_class_iou": ctx["eval_both"]["per_class_iou"],
        "metrics": {k_: ctx["eval_both"][k_] for k_ in ("miou", "pixel_accuracy")},
        "parity": {dt: parity[dt] for dt in ("float64", "float32")}, "learned": g, "knock_out": knocked,
        "carrier": carrier(ctx, knocked)[0], "key_share": shares,
        "attention_queries": {"both": records, "pam": pam_only_records},
        "paper_ablation_cityscapes": PAPER_ABLATION,
        "timings": {a: {"train_seconds": seconds[a], "eval_task_seconds": runs[a]["eval"]["seconds"]}
                    for a in MODELS},
        "cam_matrix_shape": list(cam.shape),
    }
    return page, summary


def _context(data: dict, preset, runs: dict, cam_variant: str) -> dict:
    """What every section reads: the val split, the trained DANet and PAM-only models, names, palette,
    the training logs and the kept predictions."""
    k = data["num_classes"]
    _, names, palette = class_set(None, k, data["class_names"])

    def trained(a):
        return load_trained(os.path.join(runs[a]["dir"], "model.pt"), preset, k, a, cam_variant)

    synthetic = data["dataset"] == "synthetic"
    return {"data": data, "val": load_dataset(data, "val"), "k": k, "names": list(names), "palette": palette,
            "synthetic": synthetic, "keyed": [n for n in KEYED if n in names] if synthetic else [],
            "model": trained("both"), "pam_model": trained("pam"), "eval_both": runs["both"]["eval"],
            "logs": {a: read_jsonl(os.path.join(r["dir"], "metrics.jsonl")) for a, r in runs.items()},
            "preds": {a: np.load(os.path.join(runs[a]["dir"], "predictions.npz"))["predictions"]
                      for a in ("none", "both")}}


def training_seconds(params: dict) -> float:
    """A model's training time: the trainer's own clock, summed over every run that resumed it (the
    task's ``seconds`` counts only its last run)."""
    return float(params["train"].get("seconds", params["seconds"]))


def class_order(ctx) -> list[str]:
    """Class names, the keyed classes first on the built-in data (they are the story)."""
    return ctx["keyed"] + [n for n in ctx["names"] if n not in ctx["keyed"]]


def _headline(ctx, ablation) -> str:
    gain = ablation["both"]["miou"] - ablation["none"]["miou"]
    text = (f"Dual Attention Network (Fu et al., CVPR 2019) trained and evaluated by this project's Luigi "
            f"pipeline. On the val split DANet reaches <b>{ablation['both']['miou']:.3f}</b> mIoU against the "
            f"dilated FCN's <b>{ablation['none']['miou']:.3f}</b> ({gain:+.3f}).")
    if ctx["keyed"]:
        iou = {a: " / ".join(_fmt(ablation[a]["per_class_iou"].get(c), 2) for c in ctx["keyed"])
               for a in ("none", "both")}
        text += (f" The keyed shapes, whose class only the key at the far end decides: FCN {iou['none']}, "
                 f"DANet {iou['both']} ({' / '.join(ctx['keyed'])}).")
    return f"<p>{text}</p>"


UNDEFINED_NOTE = ("<p>–: the class occurs neither in the val labels nor in that model's predictions, so its IoU "
                  "is undefined and left out of the mIoU.</p>")


def _per_class_section(ctx, ablation) -> str:
    order = class_order(ctx)
    rows = [[c] + [_fmt(ablation[a]["per_class_iou"].get(c)) for a in MODELS] for c in order]
    rows.append(["mIoU"] + [_fmt(ablation[a]["miou"]) for a in MODELS])
    rows.append(["pixel accuracy"] + [_fmt(ablation[a]["pixel_accuracy"]) for a in MODELS])
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(order) * 4 / 3 + 1.6), gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(order))
    for i, a in enumerate(MODELS):
        axes[0].barh(y + (i - 1.5) * 0.2, [ablation[a]["per_class_iou"].get(c) or 0 for c in order], 0.2,
                     label=LABELS[a], color=MODEL_COLOURS[a])
    axes[0].set_yticks(y, order, fontsize=9)
    axes[0].invert_yaxis()
    axes[0].set_xlim(0, 1)
    axes[0].set_xlabel("IoU on the val split")
    axes[0].legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)  # not on a bar
    _confusion(axes[1], fig, ctx)
    fig.tight_layout()                                              # the matrix's labels clear of the bars
    note = ("<p>The keyed classes come first: a local view cannot tell them apart, so they are where "
            "attention must help; background and key are easy for every model.</p>" if ctx["keyed"] else "")
    if any(ablation[a]["per_class_iou"].get(c) is None for a in MODELS for c in order):
        note += UNDEFINED_NOTE
    return (html_table(["class"] + [LABELS[a] for a in MODELS], rows) + note
            + html_img(_png(fig), "per-class IoU of the four models and DANet's confusion matrix"))


def _confusion(ax, fig, ctx) -> None:
    """DANet's row-normalised confusion matrix, classes in the table's order."""
    order = class_order(ctx)
    idx = [ctx["names"].index(c) for c in order]
    conf = np.array(ctx["eval_both"]["confusion"], dtype=np.float64)[np.ix_(idx, idx)]
    rows = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(order)), order, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("DANet's confusion matrix (rows normalised)", fontsize=9)
    fig.colorbar(im, ax=ax)


def _samples_section(ctx) -> str:
    """Photo, truth, FCN and DANet for a few val images: stacked full-width strips for wide scenes
    (the built-in 32×384), a grid row per image otherwise."""
    val, preds, palette = ctx["val"], ctx["preds"], ctx["palette"]
    n = min(3, len(val), len(preds["both"]))
    image0, _ = val[0]
    H, W = image0.shape[1:]
    panels = lambda i: [("photo", denormalize(val[i][0])),                              # noqa: E731
                        ("ground truth", figures.colorize(val[i][1].numpy(), palette)),
                        (LABELS["none"], figures.colorize(preds["none"][i], palette)),
                        (LABELS["both"], figures.colorize(preds["both"][i], palette))]
    wide = W >= 3 * H
    shape = (4 * n, 1) if wide else (n, 4)
    size = (14, 4 * n * (14 * H / W + 0.35)) if wide else (16, n * 4 * H / W + 0.8)
    fig, axes = plt.subplots(*shape, figsize=size, squeeze=False)
    for i in range(n):
        for j, (title, im) in enumerate(panels(i)):
            ax = axes[4 * i + j, 0] if wide else axes[i, j]
            ax.imshow(im, interpolation="nearest")
            ax.set_title(f"val image {i}: {title}" if wide else title, fontsize=9, loc="left" if wide else "center")
            ax.axis("off")
    fig.tight_layout()
    return (html_img(_png(fig), "validation images: photo, ground truth, FCN and DANet")
            + legend_html(ctx["names"], palette) + _key_note(ctx))


def legend_html(names, palette, present=None) -> str:
    """A row of colour swatches with class names (only the classes in ``present``, if given)."""
    keep = range(len(names)) if present is None else present
    return "<p>" + " ".join(f'<span class="sw" style="background:rgb{tuple(int(v) for v in palette[c])}"></span>'
                            f"{html.escape(names[c])}" for c in keep) + "</p>"


def _key_note(ctx) -> str:
    if not ctx["synthetic"]:
        return ""
    words = {name: word for name, (word, _) in zip(CLASS_NAMES["synthetic"], SYNTHETIC_COLOURS)}
    return (f"<p>In the photo the key is the coloured stripe at one end: red makes every shape "
            f"“red-keyed”, blue “blue-keyed”; the shapes themselves are the same gray either way. In the label "
            f"maps the key is drawn {words['key']}, the red-keyed shapes {words['red-keyed shape']}, the blue-keyed "
            f"shapes {words['blue-keyed shape']} and the background {words['background']}. An FCN that cannot see "
            f"the key paints a scene's shapes with one guessed colour.</p>")


def carrier(ctx, knocked: dict) -> tuple[str, dict]:
    """(which module the fused output relies on, the measure per knock-out): the measure is the keyed
    classes' mean IoU on the built-in data, the mIoU elsewhere; a module whose knock-out costs
    less than 0.02 of it is not carrying anything."""
    classes = ctx["keyed"] or [c for c in ctx["names"] if knocked["full"].get(c) is not None]

    def measure(iou):
        return float(np.mean([iou.get(c) or 0.0 for c in classes]))

    m = {name: measure(iou) for name, iou in knocked.items()}
    loss = {"PAM": m["full"] - m["pam_off"], "CAM": m["full"] - m["cam_off"]}
    big = [name for name, v in loss.items() if v >= 0.02]
    if not big:
        return "neither", m
    if len(big) == 2 and min(loss.values()) >= 0.5 * max(loss.values()):
        return "both", m
    return max(loss, key=loss.get), m


def _cost(v: float) -> str:
    """Two decimals without a "-0.00" (a knock-out that changes nothing)."""
    return f"{round(v, 2) + 0.0:.2f}"


def _carrier_section(ctx, g: dict, knocked: dict) -> str:
    who, m = carrier(ctx, knocked)
    what = "keyed shapes' mean IoU" if ctx["keyed"] else "mIoU"
    costs = f"switching PAM off costs {_cost(m['full'] - m['pam_off'])}, CAM off {_cost(m['full'] - m['cam_off'])}"
    verdict = {"neither": f"neither module alone ({costs})",
               "both": f"both modules ({costs})"}.get(who, f"<b>{who}</b> ({costs})")
    signs = [f"{sym} = {v:+.3f}" for sym, v in (("γ (PAM)", g["gamma_pam"]), ("β (CAM)", g["beta_cam"]))]
    return (f"<p>DANet's learned scales: {', '.join(signs)}. A module adds its scale times its attended "
            "features to its input (out = γ·E + A, β·Y + A); both start at 0. A negative scale subtracts the "
            "attended features instead of adding them: the convolution that follows can use either sign, so "
            "the sign says nothing of importance, and the size little more. What the network relies on shows "
            "when a module is switched off (its scale set to 0, the module becomes the identity):</p>"
            + html_table(["DANet", what], [["as trained", _fmt(m["full"])], ["PAM off (γ = 0)", _fmt(m["pam_off"])],
                                           ["CAM off (β = 0)", _fmt(m["cam_off"])]])
            + f"<p>In this run the key is carried by {verdict}. (Whole val images at their own size, fused "
              "output.)</p>")


def _attention_section(ctx, g, shares, pam_only, danet, cam_fig, cam_variant) -> str:
    names = ctx["names"]

    def share_table(records):
        header = ["image", "query (y, x)"] + [f"{n}: attention / area" for n in names]
        return html_table(header, [[r["image"], tuple(r["query_pixel"])]
                                   + [f"{r['attention_on_class'].get(str(c), 0):.2f} / {r['area_of_class'].get(str(c), 0):.2f}"
                                      for c in range(len(names))] for r in records])

    text = ("<p>Each figure: the attention of one query pixel (white cross) over all positions -- one row of "
            "S = softmax(BᵀC), at feature resolution, stretched over the photo; the cyan circle marks its peak. "
            "The tables give the row's share on each class beside that class's share of the image area: "
            "attention spread evenly would make the two equal.</p>")
    for label, (who, gamma) in (("pam", ("PAM-only model", g["pam_only_gamma"])), ("both", ("DANet", g["gamma_pam"]))):
        if label in shares:
            share, area = shares[label]
            text += (f"<p><b>{who}</b> (γ = {gamma:+.3f}): averaged over every keyed-shape cell of the val images, "
                     f"its PAM puts <b>{share:.2f}</b> of its attention on the key, which covers {area:.2f} of the "
                     f"cells ({share / max(area, 1e-12):.1f}× an even spread).</p>")
    text += ("".join(html_img(u, "PAM attention row, PAM-only model") for u in pam_only[0]) + share_table(pam_only[1])
             + "".join(html_img(u, "PAM attention row, DANet") for u in danet[0]) + share_table(danet[1]))
    return text + (html_img(cam_fig, "CAM matrix") +
                   f"<p>The CAM matrix, rows and columns in the same order: channels sorted by an average-linkage "
                   "clustering of the energy X = A·Aᵀ (the order of channels in a network means nothing; sorted, "
                   "channels with similar responses sit together and the blocks of the matrix show which groups "
                   f"mix). CAM variant: <b>{cam_variant}</b>. The official code's softmax(rowmax(X) − X) equals "
                   "softmax(−X): each channel attends most to the channels least similar to it; the paper's "
                   "equation softmax(X) is the opposite.</p>")


def _explorer_section(ctx) -> str:
    """DANet's interactive attention explorer (:mod:`danet.explore`) on the first val image, embedded."""
    from danet.explore import explorer_html, iframe

    image, _ = ctx["val"][0]
    page = explorer_html(ctx["model"], denormalize(image), ctx["names"], ctx["palette"], title="val image 0",
                         source="this run's DANet")
    return ("<p>Point at any pixel of val image 0 to see its PAM attention row and the classes it gathers from; "
            "click to pin a query and compare; hover the CAM matrix for a channel's partners. The same page for "
            "any image: <code>danet explore IMAGE --checkpoint model.pt</code>.</p>" + iframe(page))


def _curves_section(ctx) -> str:
    logs = ctx["logs"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
    for a in MODELS:
        axes[0].plot([r["iteration"] for r in logs[a]], [r["loss_terms"][0] for r in logs[a]], label=LABELS[a],
                     color=MODEL_COLOURS[a])
    axes[0].set_title("main output's loss, every model", fontsize=9)
    it = [r["iteration"] for r in logs["both"]]
    for i, name in enumerate(("fused (main) output", "PAM output", "CAM output")):
        axes[1].plot(it, [r["loss_terms"][i] for r in logs["both"]], label=name)
    axes[1].set_title("DANet's three losses (training minimises their sum)", fontsize=9)
    for ax in axes[:2]:
        ax.set_xlabel("iteration")
        ax.set_ylabel("cross-entropy")
        ax.legend(fontsize=8)
    axes[2].plot(it, [r["gamma_pam"] for r in logs["both"]], label="γ (PAM)")
    axes[2].plot(it, [r["beta_cam"] for r in logs["both"]], label="β (CAM)")
    axes[2].axhline(0, color="#999", lw=0.8)
    axes[2].set_xlabel("iteration")
    axes[2].set_title("DANet's learned attention scales", fontsize=9)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return ("<p>Left: the loss of each model's main output, the one evaluated; DANet also trains two auxiliary "
            "outputs (middle), one on PAM's branch and one on CAM's.</p>" + html_img(_png(fig), "training curves"))


def _paper_section() -> str:
    rows = [[LABELS[a], f"{PAPER_ABLATION[a]['miou']:.2f}",
             f"{PAPER_ABLATION[a]['resnet101']:.2f}" if "resnet101" in PAPER_ABLATION[a] else "–"] for a in MODELS]
    return ("<p>Fu et al., Table 1: the same four models on <b>Cityscapes val</b> (mIoU %, dilated ResNet, "
            "full recipe). Another dataset and scale: a reference for the ordering, not a target for the numbers "
            "above.</p>" + html_table(["model", "ResNet-50", "ResNet-101"], rows)
            + "<p>–: the paper's Table 1 has no ResNet-101 run of that model.</p>")


def _parity_section(parity) -> str:
    rows = []
    for dt in ("float64", "float32"):
        p = parity[dt]
        for name, e in [("PAM", p["pam"]), ("CAM", p["cam"])] + [(f"head ({o})", e) for o, e in p["head"].items()]:
            rows.append([dt, name, f"{e['max_abs']:.2e}", f"{e['max_rel']:.2e}"])
    return (f"<p>{parity['images']} val images, features {parity['feature_shape']}; relative error is "
            "max|NumPy − torch| / max|torch|.</p>" + html_table(["dtype", "module", "max abs", "max rel"], rows))


def _timings_section(seconds: dict, runs: dict, parity) -> str:
    rows = [[LABELS[a], _fmt(seconds[a], 1), _fmt(runs[a]["eval"]["seconds"], 1)] for a in MODELS]
    head = parity["float32"]["seconds"]
    return (html_table(["model", "training (s, over every resumed run)", "evaluation (s)"], rows)
            + f"<p>The trained head on the val features: NumPy {head['numpy_head']} s, torch {head['torch_head']} s.</p>")


def _config_section(data, preset, seed, model) -> str:
    return html_table(["item", "value"], [
        ["dataset", data["dataset"]], ["classes", ", ".join(data["class_names"])],
        ["train / val images", f"{data['counts']['train']} / {data['counts']['val']}"],
        ["preset", preset.name], ["backbone", f"{preset.backbone}, output stride {preset.output_stride}"
                                  + (f", multi-grid {preset.multi_grid}" if preset.multi_grid else "")],
        ["iterations × batch", f"{preset.iterations} × {preset.batch_size}"],
        ["lr (head ×)", f"{preset.lr} (×{preset.head_lr_mult}), poly {preset.poly_power}, momentum "
                        f"{preset.momentum}, weight decay {preset.weight_decay}"],
        ["seed", seed]]) + _receptive_field_note(model, data)


PAGE_STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222;line-height:1.4}
img{max-width:100%;display:block;margin:.5em 0} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left} th{background:#f0f0f0}
.sw{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;border:1px solid #888}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:.5em}
.row{display:flex;gap:1em;align-items:flex-start} .row img[alt="overlay with legend"]{max-width:68%}
.row img[alt="colour segmentation"]{width:30%;image-rendering:pixelated}"""


def html_page(title: str, intro: str, sections) -> str:
    """One self-contained page: the title, an introduction (HTML), then ``(heading, HTML)`` sections.
    The template of both reports (this one and :mod:`pipeline.checkpoint_report`)."""
    body = "".join(f"<h2>{html.escape(t)}</h2>{c}" for t, c in sections)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{PAGE_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{intro}\n{body}</body></html>")


def _receptive_field_note(model, data) -> str:
    from danet import receptive_field

    rf = receptive_field(model)["receptive_field"]
    note = f"<p>Receptive field of the FCN path (backbone + conv5a + conv51 + upsampling): <b>{rf} px</b>"
    if data["dataset"] == "synthetic":
        meta_path = os.path.join(data["data_dir"], "meta.json")
        with open(meta_path) as f:
            meta = json.load(f)
        note += (f"; every shape pixel is at least {meta['min_distance']} px from every key pixel, more than "
                 f"half of it ({rf / 2:.0f} px), so no FCN output pixel on a shape sees the key")
    return note + ".</p>"
