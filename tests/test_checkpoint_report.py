"""CheckpointReport: an imported checkpoint on a folder of images, through Luigi's local scheduler.

A tiny DANet (γ, β ≠ 0) saved as a checkpoint and two small images in a temporary folder; the
report must hold every figure as a PNG data URI, the per-stage NumPy-vs-torch table within the
bars, and the CheckpointInfo; its path encodes the checkpoint stem and a content hash. A missing
folder, or one with no images, is refused at scheduling, before any work and with nothing written.
"""

import base64
import html
import io
import json
import re

import luigi
import pytest
import torch
from PIL import Image

from pipeline.artifacts import CODE_VERSION
from pipeline.command_line import announce
from pipeline.tasks import CheckpointReport
from danet import DANet
from tests.test_cli import scene
from tests.test_network_parity import randomise


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = randomise(DANet(4, "tiny"), seed=5, gamma_pam=0.6, beta_cam=0.4)
    torch.save(model.state_dict(), tmp_path / "tiny_danet.pt")
    images = tmp_path / "photos"
    images.mkdir()
    Image.fromarray(scene(40, 56, 0)).save(images / "a.png")
    Image.fromarray(scene(48, 40, 1)).save(images / "b.jpg")
    (images / "readme.txt").write_text("not an image, not listed")
    root = tmp_path / "artifacts"
    config = luigi.configuration.get_config()
    config.set("pipeline", "root", str(root))
    config.set("pipeline", "progress", "false")
    yield tmp_path, root
    config.set("pipeline", "root", "artifacts")
    config.set("pipeline", "progress", "true")


def build(task):
    return luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")


def test_report_has_every_figure_the_table_and_the_info(setup):
    tmp, root = setup
    task = CheckpointReport(checkpoint=str(tmp / "tiny_danet.pt"), images=str(tmp / "photos"), classes="4")
    result = build(task)
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    out = task.output()
    assert re.fullmatch(rf"{re.escape(str(root))}/{CODE_VERSION}/checkpoint-reports/tiny_danet-[0-9a-f]{{12}}/report.html",
                        out["html"].path)
    page = open(out["html"].path).read()
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)">', page)
    assert [alt for _, alt in uris] == ["overlay with legend", "colour segmentation", "attention: PAM rows and CAM matrix"] * 2
    for data, _ in uris:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            im.verify()
    assert "a.png (40×56)" in page and "b.jpg (48×40)" in page
    explorers = [html.unescape(doc) for doc in re.findall(r'<iframe srcdoc="([^"]*)"', page)]
    assert [re.search(r'"title":"([^"]*)"', doc).group(1) for doc in explorers] == ["a.png", "b.jpg"]
    assert all("danetExplorer" in doc and "http://" not in doc and "https://" not in doc for doc in explorers)
    assert "format</td><td>project" in page and "backbone</td><td>tiny" in page
    assert "sa_feat" in page and "within 1e-10" in page and "within 1e-04" in page
    summary = json.loads(open(out["json"].path).read())
    assert [s["size"] for s in summary["images"]] == [[40, 56], [48, 40]]
    assert summary["parity"]["float64"]["overall_max_rel_error"] <= 1e-10
    assert summary["parity"]["float32"]["overall_max_rel_error"] <= 1e-4
    assert summary["gamma_pam"] == pytest.approx(0.6) and summary["info"]["num_classes"] == 4
    assert summary["params"]["images"] == str(tmp / "photos")
    line = announce(["--module", "pipeline", "CheckpointReport", "--checkpoint", str(tmp / "tiny_danet.pt"),
                     "--images", str(tmp / "photos"), "--classes", "4"])   # what `luigi` prints last
    assert line == f"CheckpointReport: {out['html'].path}"


def test_the_checkpoint_table_is_in_words_with_a_legend_and_a_warning_when_untrained(setup):
    from pipeline.checkpoint_report import build_checkpoint_report, list_images

    tmp, _ = setup
    torch.save(DANet(4, "tiny").state_dict(), tmp / "untrained.pt")   # γ = β = 0, as initialised
    page, _ = build_checkpoint_report(str(tmp / "untrained.pt"), list_images(str(tmp / "photos")), check_size=48)
    table = page.split("<table>")[1].split("</table>")[0]
    cells = re.findall(r"<td>([^<]*)</td>", table)
    assert "()" not in cells and "None" not in cells and not any(c.startswith("{") for c in cells)
    assert "keys ignored</td><td>none" in table and "classes</td><td>4" in table
    assert 'class="warn"' in page and "both 0" in page
    assert page.count('<span class="sw"') >= 2                         # a legend under each segmentation
    page, _ = build_checkpoint_report(str(tmp / "tiny_danet.pt"), list_images(str(tmp / "photos")), check_size=48)
    assert 'class="warn"' not in page


def test_the_path_changes_with_the_images(setup):
    tmp, _ = setup
    first = CheckpointReport(checkpoint=str(tmp / "tiny_danet.pt"), images=str(tmp / "photos")).output()["html"].path
    Image.fromarray(scene(40, 56, 7)).save(tmp / "photos" / "a.png")
    second = CheckpointReport(checkpoint=str(tmp / "tiny_danet.pt"), images=str(tmp / "photos")).output()["html"].path
    assert first != second


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_a_bad_images_folder_is_refused_before_work(setup, folder, caplog):
    tmp, root = setup
    (tmp / "empty").mkdir()
    (tmp / "empty" / "notes.txt").write_text("no images here")
    result = build(CheckpointReport(checkpoint=str(tmp / "tiny_danet.pt"), images=str(tmp / folder)))
    assert result.status == luigi.LuigiStatusCode.SCHEDULING_FAILED, result.summary_text
    expected = "does not exist" if folder == "missing" else "holds no image file"
    assert any(f"--images '{tmp / folder}' {expected}" in r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert not root.exists(), "nothing may be written"
