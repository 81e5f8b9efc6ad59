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
from danet.head import ATTENTIONS  # noqa: E402
from danet.inference import cam_matrix, feature_cell, pam_rows  # noqa: E402
from pipeline.artifacts import environment, read_jsonl  # noqa: E402
from pipeline.build import load_dataset, load_trained  # noqa: E402
from pipeline.datasets import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

# Paper, Table 1 (Cityscapes val, mIoU %): the ablation this pipeline repeats on its own data.
PAPER_ABLATION = {
    "backbone": "ResNet-50 (ResNet-101 in brackets)", "dataset": "Cityscapes val",
    "none": {"miou": 70.03, "resnet101": 72.54}, "pam": {"miou": 75.74}, "cam": {"miou": 74.28},
    "both": {"miou": 76.34, "resnet101": 77.57},
}
LABELS = {"none": "dilated FCN (no attention)", "pam": "PAM only", "cam": "CAM only", "both": "DANet (PAM + CAM)"}


def png_uri(data: bytes) -> str:
    """PNG bytes as a data URI: the page embeds every figure, so it is one self-contained file."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _png(fig) -> str:
    return png_uri(figures.png_bytes(fig))


def html_img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _palette(k: int) -> np.ndarray:
    cmap = plt.get_cmap("tab20" if k > 10 else "tab10")
    return (np.array([cmap(i % cmap.N)[:3] for i in range(k)]) * 255).astype(np.uint8)


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
    resolution, q×N, by :func:`danet.inference.pam_rows`) and its share per class; the CAM matrix
    averaged over the images, if the model has CAM. Returns (PAM figure URIs, CAM figure URI or
    None, records, mean CAM matrix or None)."""
    model.eval()
    k = dataset.NUM_CLASSES
    uris, cams, records = [], [], []
    for i in range(min(n_images, len(dataset))):
        image, label = dataset[i]
        A = model.features(image[None])                               # (1, C_in, h, w)
        (h, w), (H, W) = A.shape[2:], label.shape
        queries = query_pixels(label.numpy(), synthetic, k)[:1]
        cells = [feature_cell(y, x, H, W, h, w, model.align_corners) for y, x in queries]
        rows = pam_rows(model, A, cells)                              # (1, h, w)
        cam = cam_matrix(model, A)                                    # (C_i, C_i) or None
        if cam is not None:
            cams.append(cam.numpy())
        fig = figures.attention_figure(denormalize(image), queries, rows.numpy(), None, model.gammas(),
                                       title=f"{title}: image {i}, query pixel at the white cross")
        uris.append(_png(fig))
        records.append({"image": i, "query_pixel": list(queries[0]), "max_attention": float(rows[0].max()),
                        "attention_on_class": _mass_per_class(rows[0].numpy(), label.numpy(), k)})
    if not cams:
        return uris, None, records, None
    cam = np.mean(cams, axis=0)                                       # (C_i, C_i)
    fig = figures.attention_figure(denormalize(image), [], None, cam, model.gammas(),
                                   title=f"{title}: CAM matrix, mean over {len(cams)} images")
    return uris, _png(fig), records, cam


def _mass_per_class(row: np.ndarray, label: np.ndarray, k: int) -> dict:
    """Share of one attention row (h, w) that falls on the feature cells of each class (majority label)."""
    h, w = row.shape
    H, W = label.shape
    cells = label[(np.arange(h) * H // h + H // (2 * h))[:, None], (np.arange(w) * W // w + W // (2 * w))[None, :]]
    return {str(c): float(row[cells == c].sum()) for c in range(k) if np.any(cells == c)}


def build_report(data: dict, preset, seed: int, runs: dict, ablation: dict, parity: dict,
                 cam_variant: str = "official") -> tuple[str, dict]:
    """The FullReport page and its JSON summary, from plain records.

    ``data`` is a dataset record (dataset.json); ``runs`` maps each attention mode to
    ``{"dir": its model directory, "train": its params.json, "eval": its eval.json}``; ``ablation``
    and ``parity`` are the contents of ablation.json and parity.json.
    """
    val = load_dataset(data, "val")
    k, names = data["num_classes"], data["class_names"]
    synthetic = data["dataset"] == "synthetic"

    def trained(a):
        return load_trained(os.path.join(runs[a]["dir"], "model.pt"), preset, k, a, cam_variant)

    model = trained("both")
    eval_both = runs["both"]["eval"]
    train_params = {a: r["train"] for a, r in runs.items()}
    eval_params = {a: r["eval"] for a, r in runs.items()}
    logs = {a: read_jsonl(os.path.join(r["dir"], "metrics.jsonl")) for a, r in runs.items()}
    preds = {a: np.load(os.path.join(runs[a]["dir"], "predictions.npz"))["predictions"] for a in ("none", "both")}

    sections = []
    # 1. dataset and configuration
    sections.append(("Dataset and configuration", html_table(["item", "value"], [
        ["dataset", data["dataset"]], ["classes", ", ".join(names)],
        ["train / val images", f"{data['counts']['train']} / {data['counts']['val']}"],
        ["preset", preset.name], ["backbone", f"{preset.backbone}, output stride {preset.output_stride}"
                                  + (f", multi-grid {preset.multi_grid}" if preset.multi_grid else "")],
        ["iterations × batch", f"{preset.iterations} × {preset.batch_size}"],
        ["lr (head ×)", f"{preset.lr} (×{preset.head_lr_mult}), poly {preset.poly_power}, momentum "
                        f"{preset.momentum}, weight decay {preset.weight_decay}"],
        ["seed", seed]]) + _receptive_field_note(model, data)))
    env = environment()
    sections.append(("Environment", html_table(["item", "value"], [[k_, v] for k_, v in env.items()])))

    # 2. samples with ground truth, FCN vs DANet predictions
    n_show = min(4, len(val), len(preds["both"]))
    fig, axes = plt.subplots(n_show, 4, figsize=(16, 1.5 * n_show + 0.8), squeeze=False)
    for r in range(n_show):
        image, label = val[r]
        for c, (title, im) in enumerate([("image", denormalize(image)),
                                         ("ground truth", figures.colorize(label.numpy(), _palette(k))),
                                         (f"FCN: {LABELS['none']}", figures.colorize(preds["none"][r], _palette(k))),
                                         ("DANet", figures.colorize(preds["both"][r], _palette(k)))]):
            axes[r, c].imshow(im)
            axes[r, c].set_title(title, fontsize=9)
            axes[r, c].axis("off")
    legend = " ".join(f'<span class="sw" style="background:rgb{tuple(int(v) for v in col)}"></span>{html.escape(n)}'
                      for n, col in zip(names, _palette(k)))
    sections.append(("Validation images: ground truth, FCN baseline and DANet", html_img(_png(fig), "predictions")
                     + f"<p>{legend}</p>"))

    # 3. training curves
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.6))
    for a in ATTENTIONS:
        it = [r["iteration"] for r in logs[a]]
        axes[0].plot(it, [r["loss"] for r in logs[a]], label=LABELS[a])
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("training loss (sum of the outputs' CE)")
    axes[0].legend(fontsize=8)
    it = [r["iteration"] for r in logs["both"]]
    axes[1].plot(it, [r["gamma_pam"] for r in logs["both"]], label="γ (PAM)")
    axes[1].plot(it, [r["beta_cam"] for r in logs["both"]], label="β (CAM)")
    axes[1].set_xlabel("iteration")
    axes[1].set_title("learned attention scales of DANet", fontsize=9)
    axes[1].legend(fontsize=8)
    sections.append(("Training curves", html_img(_png(fig), "training curves")))

    # 4. metrics, per-class IoU, confusion
    per_class = eval_both["per_class_iou"]
    conf = np.array(eval_both["confusion"], dtype=np.float64)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    axes[0].barh(list(per_class), [v or 0 for v in per_class.values()], color=[c / 255 for c in _palette(k)])
    axes[0].set_xlim(0, 1)
    axes[0].set_xlabel("IoU (DANet)")
    rows = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    im = axes[1].imshow(rows, cmap="Blues", vmin=0, vmax=1)
    axes[1].set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    axes[1].set_yticks(range(k), names, fontsize=8)
    axes[1].set_xlabel("predicted")
    axes[1].set_ylabel("true")
    axes[1].set_title("confusion matrix (rows normalised)", fontsize=9)
    fig.colorbar(im, ax=axes[1])
    metrics_html = html_table(["metric", "DANet"], [["mIoU", _fmt(eval_both["miou"])],
                                                ["pixel accuracy", _fmt(eval_both["pixel_accuracy"])]])
    sections.append(("Final metrics (val)", metrics_html + html_img(_png(fig), "per-class IoU and confusion")))

    # 5. attention: DANet's own PAM, and the PAM-only model's (which must use PAM to solve the task)
    pam_model = trained("pam")
    pam_figs, cam_fig, attention_records, cam = attention_figures(model, val, 3, synthetic, "DANet")
    pam_only_figs, _, pam_only_records, _ = attention_figures(pam_model, val, 3, synthetic, "PAM-only model")
    g = {**model.gammas(), "pam_only_gamma": pam_model.gammas()["gamma_pam"]}

    def share_table(records):
        return html_table(["image", "query (y, x)", "share of the attention row per class"],
                      [[r["image"], r["query_pixel"],
                        ", ".join(f"{names[int(c)]}: {v:.2f}" for c, v in r["attention_on_class"].items())]
                       for r in records])

    sections.append(("What the attention learned",
                     f"<p>Learned scales of DANet: γ (PAM) = {g['gamma_pam']:.4f}, β (CAM) = {g['beta_cam']:.4f}; "
                     f"of the PAM-only model: γ = {g['pam_only_gamma']:.4f}. They start at 0, so their size is how "
                     "much each network chose to use its module.</p>"
                     + "<p>Each row below: the attention of one query pixel (white cross) over all positions — one "
                       "row of S = softmax(BᵀC), upsampled from feature resolution. On the built-in data the query "
                       "sits on a keyed shape; the key that decides its class is at the other end of the image.</p>"
                     + "".join(html_img(u, "PAM attention row, PAM-only model") for u in pam_only_figs)
                     + share_table(pam_only_records)
                     + "".join(html_img(u, "PAM attention row, DANet") for u in pam_figs)
                     + share_table(attention_records)
                     + html_img(cam_fig, "CAM matrix")
                     + f"<p>CAM variant: <b>{cam_variant}</b>. The official code's "
                       "softmax(rowmax(X) − X) equals softmax(−X): each channel attends most to the channels "
                       "least similar to it; the paper's equation softmax(X) is the opposite.</p>"))

    # 6. ablation next to the paper
    abl_rows = []
    for a in ATTENTIONS:
        paper = PAPER_ABLATION[a]
        abl_rows.append([LABELS[a], _fmt(ablation[a]["miou"]), _fmt(ablation[a]["pixel_accuracy"]),
                         f"{paper['miou']:.2f}" + (f" ({paper['resnet101']:.2f})" if "resnet101" in paper else ""),
                         _fmt(train_params[a]["train"].get("seconds"), 1)])
    gain = ablation["both"]["miou"] - ablation["none"]["miou"]
    sections.append(("Ablation", html_table(["model", "mIoU (here)", "pixel acc. (here)",
                                         "paper mIoU % (Cityscapes val, R-50; R-101)", "train s"], abl_rows)
                     + f"<p>DANet − FCN here: <b>{gain:+.3f}</b> mIoU.</p>"))

    # 7. parity
    par_rows = []
    for dt in ("float64", "float32"):
        p = parity[dt]
        for name, e in [("PAM", p["pam"]), ("CAM", p["cam"])] + [(f"head ({o})", e) for o, e in p["head"].items()]:
            par_rows.append([dt, name, f"{e['max_abs']:.2e}", f"{e['max_rel']:.2e}"])
    sections.append(("NumPy reference vs PyTorch on the trained model",
                     f"<p>{parity['images']} val images, features {parity['feature_shape']}; relative error is "
                     "max|NumPy − torch| / max|torch|.</p>" + html_table(["dtype", "module", "max abs", "max rel"], par_rows)))

    # 8. timings
    timing_rows = [[LABELS[a], _fmt(train_params[a]["seconds"], 1), _fmt(eval_params[a]["seconds"], 1)]
                   for a in ATTENTIONS]
    sections.append(("Timings (seconds)", html_table(["model", "train task", "evaluation task"], timing_rows)
                     + html_table(["NumPy head", "torch head"], [[parity["float32"]["seconds"]["numpy_head"],
                                                              parity["float32"]["seconds"]["torch_head"]]])))

    summary = {
        "dataset": data["dataset"], "preset": preset.as_dict(), "seed": seed, "environment": env,
        "ablation": {a: {"miou": ablation[a]["miou"], "pixel_accuracy": ablation[a]["pixel_accuracy"]}
                     for a in ATTENTIONS},
        "danet_minus_fcn_miou": gain, "per_class_iou": per_class, "metrics": {k_: eval_both[k_] for k_ in
                                                                          ("miou", "pixel_accuracy")},
        "parity": {dt: parity[dt] for dt in ("float64", "float32")}, "learned": g,
        "attention_queries": {"both": attention_records, "pam": pam_only_records},
        "paper_ablation_cityscapes": PAPER_ABLATION,
        "timings": {a: {"train_task_seconds": train_params[a]["seconds"], "eval_task_seconds": eval_params[a]["seconds"]}
                    for a in ATTENTIONS},
        "cam_matrix_shape": list(cam.shape),
    }
    body = "".join(f"<h2>{html.escape(t)}</h2>{c}" for t, c in sections)
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>DANet report — {html.escape(data['dataset'])}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}} img{{max-width:100%}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
th{{background:#f0f0f0}} .sw{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}</style></head>
<body><h1>DANet report: {html.escape(data['dataset'])}, preset {html.escape(preset.name)}, seed {seed}</h1>
<p>Dual Attention Network (Fu et al., CVPR 2019) trained and evaluated by this project's Luigi pipeline.</p>
{body}</body></html>"""
    return page, summary


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
