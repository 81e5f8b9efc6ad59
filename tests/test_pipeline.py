"""The Luigi pipeline end to end on the smoke preset, in a temporary root."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import luigi
import pytest

import pipeline
from pipeline.artifacts import CODE_VERSION

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    config = luigi.configuration.get_config()
    config.set("pipeline", "root", str(root))
    config.set("pipeline", "progress", "false")
    result = luigi.build([pipeline.FullReport(preset="smoke")], local_scheduler=True, detailed_summary=True)
    assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text
    yield root
    config.set("pipeline", "root", "artifacts")


def report_dir(root):
    return root / CODE_VERSION / "reports" / "synthetic-smoke-seed0"


def test_full_report_files_and_figures(smoke_root):
    report = json.loads((report_dir(smoke_root) / "report.json").read_text())
    for a in ("none", "pam", "cam", "both"):
        assert 0.0 <= report["ablation"][a]["miou"] <= 1.0
    p64, p32 = report["parity"]["float64"], report["parity"]["float32"]
    for p, tol in ((p64, 1e-10), (p32, 1e-4)):
        assert p["pam"]["max_rel"] <= tol and p["cam"]["max_rel"] <= tol
        assert all(e["max_rel"] <= tol for e in p["head"].values())
    assert report["learned"]["gamma_pam"] != 0.0 and report["learned"]["beta_cam"] != 0.0
    page = (report_dir(smoke_root) / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 6
    assert "http://" not in page.split("<body>")[1] and "https://" not in page.split("<body>")[1]
    for heading in ("Per-class IoU of the four models", "Which module carries the key", "What the attention looks at",
                    "Training curves", "Paper ablation, Fu et al. Table 1: Cityscapes val, not this data",
                    "NumPy reference vs PyTorch"):
        assert heading in page


def test_the_report_shows_every_models_per_class_iou(smoke_root):
    """The per-class table: a column per model, a row per class, keyed classes first, numbers from ablation.json."""
    from pipeline.report import LABELS

    page = (report_dir(smoke_root) / "report.html").read_text()
    section = page.split("<h2>Per-class IoU of the four models</h2>")[1].split("</table>")[0]
    header = re.findall(r"<th>([^<]*)</th>", section)
    assert header == ["class"] + [LABELS[a] for a in ("none", "pam", "cam", "both")]
    rows = [re.findall(r"<td>([^<]*)</td>", r) for r in section.split("<tr>")[2:]]
    assert [r[0] for r in rows] == ["red-keyed shape", "blue-keyed shape", "background", "key", "mIoU", "pixel accuracy"]
    report = json.loads((report_dir(smoke_root) / "report.json").read_text())
    for r in rows[:4]:
        for cell, a in zip(r[1:], ("none", "pam", "cam", "both")):
            iou = report["per_class_iou_by_model"][a][r[0]]
            assert cell == ("–" if iou is None else f"{iou:.3f}")


def test_the_report_embeds_an_attention_explorer(smoke_root):
    """One explorer page (danet.explore) for val image 0, inside a sandboxed iframe, referring to nothing outside."""
    import html as html_lib

    page = (report_dir(smoke_root) / "report.html").read_text()
    section = page.split("<h2>Explore the attention</h2>")[1].split("<h2>")[0]
    frames = re.findall(r'<iframe srcdoc="([^"]*)"[^>]*sandbox="allow-scripts"', section)
    assert len(frames) == 1
    inner = html_lib.unescape(frames[0])
    assert "val image 0" in inner and "this run's DANet" in inner
    assert not re.search(r'(src|href)\s*=\s*["\']?https?:', inner)


def test_the_report_path_is_announced(smoke_root, capsys):
    from pipeline.command_line import announce

    line = announce(["--module", "pipeline", "FullReport", "--preset", "smoke", "--pipeline-root", str(smoke_root)])
    assert line == f"FullReport: {report_dir(smoke_root) / 'report.html'}"
    assert capsys.readouterr().out.strip() == line


def test_every_artifact_has_its_record(smoke_root):
    run = smoke_root / CODE_VERSION / "runs" / "synthetic" / "smoke" / "seed0"
    for a in ("none", "pam", "cam", "both"):
        d = run / f"{a}-official"
        params = json.loads((d / "params.json").read_text())
        assert params["params"]["attention"] == a and params["params"]["seed"] == 0
        assert {"torch", "numpy", "python"} <= set(params["environment"])
        lines = (d / "metrics.jsonl").read_text().splitlines()
        assert json.loads(lines[-1])["iteration"] == 6
        assert (d / "eval.json").exists() and (d / "model.pt").exists()
    assert not list(smoke_root.rglob("*.tmp*")), "a temporary file was left behind"


def test_second_run_does_nothing(smoke_root):
    before = (report_dir(smoke_root) / "report.json").stat().st_mtime_ns
    result = luigi.build([pipeline.FullReport(preset="smoke")], local_scheduler=True, detailed_summary=True)
    assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS
    assert "complete ones were encountered" in result.summary_text and "ran successfully" not in result.summary_text
    assert (report_dir(smoke_root) / "report.json").stat().st_mtime_ns == before


def test_parameters_that_change_results_change_paths():
    a = pipeline.TrainedModel(preset="smoke", seed=0).output().path
    assert pipeline.TrainedModel(preset="smoke", seed=1).output().path != a
    assert pipeline.TrainedModel(preset="smoke", attention="pam").output().path != a
    assert pipeline.TrainedModel(preset="smoke", cam_variant="paper").output().path != a
    assert pipeline.TrainedModel(preset="cpu").output().path != a
    assert CODE_VERSION in a


def test_failed_task_exits_non_zero_and_leaves_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "luigi", "--module", "pipeline", "PreparedDataset",
                          "--dataset", "no-such-set", "--local-scheduler", "--pipeline-root", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    # refused when the command line is read, before any task runs: luigi.cfg [retcode] unhandled_exception
    assert res.returncode == 40, res.stdout[-2000:] + res.stderr[-2000:]
    assert "unknown dataset 'no-such-set'" in res.stderr + res.stdout
    assert not list(tmp_path.rglob("dataset.json"))


def test_the_design_card_command_runs_without_a_central_scheduler(tmp_path):
    """`luigi --module pipeline <Task>` as typed: no --local-scheduler, no luigid running."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "luigi", "--module", "pipeline", "PreparedDataset", "--preset", "smoke",
                          "--pipeline-root", str(tmp_path), "--pipeline-progress", "false"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert list(tmp_path.rglob("dataset.json"))


def test_a_named_scheduler_is_used_not_replaced():
    from pipeline.tasks import use_local_scheduler_unless_one_is_named

    assert use_local_scheduler_unless_one_is_named(["FullReport", "--scheduler-host", "luigid.example"]) is False
    assert use_local_scheduler_unless_one_is_named(["FullReport", "--scheduler-url=http://h:8082/"]) is False
    assert use_local_scheduler_unless_one_is_named(["FullReport", "--workers", "2"]) is True
