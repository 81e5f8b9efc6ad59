"""The training recipe, each piece checked where a break would otherwise pass the suite (issue 18, part 2):
the poly schedule's power, the head's ×10 learning rate, the loss's class weights inside the training
loop, and the atomic checkpoint write after a crash.

Each test was run against a deliberately broken ``pipeline/train.py`` and failed; the breaks are
named in each docstring.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from danet import DANet
from pipeline import synthetic
from pipeline.presets import PRESETS
from pipeline.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("keyed")
    synthetic.generate(str(root), n_train=6, n_val=2, seed=3)
    return synthetic.KeyedShapes(root, "train")


def _train(data, out, **fields):
    torch.manual_seed(0)
    model = DANet(4, "tiny")
    preset = dataclasses.replace(PRESETS["smoke"], **{"iterations": 4, "checkpoint_every": 4, "log_every": 1,
                                                      **fields})
    summary = train(model, data, preset, str(out), seed=0, progress=False)
    return model, preset, summary


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """Four iterations at lr 0.01, power 0.9, logging every one: (model, preset, out folder)."""
    out = tmp_path_factory.mktemp("recipe")
    model, preset, _ = _train(tiny_data, out, poly_power=0.9, lr=0.01)
    return model, preset, out


def test_the_learning_rate_follows_the_poly_schedule_with_its_power(trained):
    """lr(it) = lr0 · (1 − it/T)^power for iteration it = 0 … T−1 (logged after the step, at it + 1).
    Breaks that fail here: power ignored (``** 1``), power squared, the schedule counted from 1."""
    _, preset, out = trained
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    T = preset.iterations
    expected = [0.01 * (1 - it / T) ** 0.9 for it in range(T)]
    assert [r["lr"] for r in log] == pytest.approx(expected, rel=1e-12)
    assert expected[2] != pytest.approx(0.01 * (1 - 2 / T), rel=1e-3)      # the power makes a difference here


def test_the_head_learns_at_ten_times_the_backbone_rate(trained):
    """The optimizer in the last checkpoint: the backbone's group at lr, the head's at 10 · lr, and
    the head's group holds exactly the parameters outside ``pretrained.``. Breaks that fail here:
    the head's ``lr`` or ``base_lr`` without ``head_lr_mult``, the lr update ignoring ``base_lr``,
    a head parameter put in the backbone's group, the preset's multiplier changed."""
    model, preset, out = trained
    assert preset.head_lr_mult == 10.0                                     # the authors' recipe
    groups = torch.load(out / "ckpt_000004.pt", weights_only=True)["optimizer"]["param_groups"]
    scale = (1 - 3 / preset.iterations) ** preset.poly_power                # the last step's, iteration 3
    assert groups[0]["lr"] == pytest.approx(0.01 * scale, rel=1e-12)
    assert groups[1]["lr"] == pytest.approx(0.1 * scale, rel=1e-12)
    names = [n for n, _ in model.named_parameters()]
    head = [i for i, n in enumerate(names) if not n.startswith("pretrained.")]
    assert len(groups[1]["params"]) == len(head) and len(groups[0]["params"]) == len(names) - len(head)


def test_the_training_loss_uses_the_class_weights(tiny_data, tmp_path):
    """From the same weights and batch, the first iteration's loss with class balancing differs from
    the plain one, and by as much as the weighted mean says. Breaks that fail here: the training loop
    calling ``segmentation_loss`` without ``weight``, the weights computed but replaced by ones."""
    from pipeline.train import class_weights

    _train(tiny_data, tmp_path / "plain", iterations=1)
    _train(tiny_data, tmp_path / "weighted", iterations=1, class_balance=1.0)
    first = {k: json.loads((tmp_path / k / "metrics.jsonl").read_text().splitlines()[0]) for k in ("plain", "weighted")}
    assert len(set(class_weights(tiny_data, 1.0))) > 1
    assert abs(first["weighted"]["loss"] - first["plain"]["loss"]) > 1e-3 * first["plain"]["loss"]


CRASH_SCRIPT = """
import dataclasses, io, os, sys, torch
from danet import DANet
from pipeline import synthetic
from pipeline.presets import PRESETS
from pipeline.train import train
data_dir, out = sys.argv[1], sys.argv[2]
real_save, calls = torch.save, []

def dying_save(obj, f, *args, **kwargs):   # the second checkpoint: half written, then the process dies
    calls.append(f)
    if len(calls) < 2:
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer)
    with open(f, "wb") as handle:
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    os._exit(9)                            # as kill -9: no finally, no cleanup

torch.save = dying_save
torch.set_num_threads(1)
torch.manual_seed(0)
preset = dataclasses.replace(PRESETS["smoke"], iterations=6, checkpoint_every=2)
train(DANet(4, "tiny"), synthetic.KeyedShapes(data_dir, "train"), preset, out, seed=0, progress=False)
"""


def test_a_crash_during_a_checkpoint_write_leaves_no_truncated_checkpoint(tiny_data, tmp_path):
    """The process dies half-way through writing checkpoint 4: every ``ckpt_*.pt`` must still load,
    read directly (not through ``latest_checkpoint``, whose fallback to an older file would hide a
    truncated one). Break that fails here: ``_checkpoint`` writing ``ckpt_*.pt`` directly instead of
    through ``atomic_path``."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(tiny_data.root), str(out)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]
    checkpoints = sorted(out.glob("ckpt_*.pt"))
    assert [p.name for p in checkpoints] == ["ckpt_000002.pt"]
    for path in checkpoints:
        assert torch.load(path, weights_only=True)["iteration"] == 2
    assert len(list(out.glob(".ckpt_000004.pt.tmp-*"))) == 1             # the half-written temporary
