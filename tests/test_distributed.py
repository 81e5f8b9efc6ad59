"""Data-parallel training on two CPU processes (gloo) against one process on the same global batch."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from danet import DANet
from pipeline import synthetic
from pipeline.artifacts import CODE_VERSION
from pipeline.distributed import init_distributed, run_rank
from pipeline.presets import PRESETS
from pipeline.train import latest_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
# the smoke recipe with a global batch of 4 (2 per rank) and random scale + crop: crops are padded
# with ignored pixels, so the two ranks hold different numbers of labelled pixels
PRESET = dataclasses.replace(PRESETS["smoke"], iterations=6, batch_size=4, checkpoint_every=2,
                             crop_size=32, scale_range=(0.6, 1.0))
# the exact comparison also weights the classes (median-frequency balancing, halved): each rank's share
# of the global loss is then its pixels' total class weight, not their number
WEIGHTED = dataclasses.replace(PRESET, class_balance=0.5)
TOL = 1e-10            # float64 end to end (see the first test's docstring)
JOIN_TIMEOUT_S = 600   # a hung rank fails the test instead of hanging it


def _bn_with_running_stats(bn, x):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _model(seed, per_sample=False):
    """DANet(4, "tiny") as seeded. ``per_sample`` is a test-only tweak for an exact comparison: the
    model is float64, every BatchNorm normalises with its running statistics and Dropout2d has
    p = 0, so a sample's gradient does not depend on which samples share its process nor on a
    process's RNG."""
    torch.manual_seed(seed)
    model = DANet(4, "tiny")
    if per_sample:
        model.double()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.forward = lambda x, bn=m: _bn_with_running_stats(bn, x)
            elif isinstance(m, torch.nn.Dropout2d):
                m.p = 0.0
    return model


def _train_ranks(rank, data_dir, out, store):
    torch.set_num_threads(1)
    init_distributed("gloo", timeout_s=120, init_method=f"file://{store}", rank=rank, world_size=WORLD)
    data = synthetic.KeyedShapes(data_dir, "train")
    train(_model(0, per_sample=True), data, WEIGHTED, os.path.join(out, "ddp"), seed=0, progress=False)
    # plain float32 model (BN per rank, dropout on): an interrupted + resumed run against an uninterrupted one
    train(_model(0), data, PRESET, os.path.join(out, "straight"), seed=0, progress=False)
    train(_model(0), data, PRESET, os.path.join(out, "resumed"), seed=0, progress=False, stop_after=3)
    train(_model(0), data, PRESET, os.path.join(out, "resumed"), seed=0, progress=False)


def _worker(rank, *args):
    run_rank(_train_ranks, rank, *args)  # exit code 0 or 1 (traceback printed); no interpreter shutdown


def spawn_and_join(fn, args, nprocs, timeout_s):
    """torch.multiprocessing.spawn with a deadline: ranks still alive after it are killed, and the test fails."""
    context = torch.multiprocessing.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=5):  # raises ProcessRaisedException / ProcessExitedException on a failure
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail(f"{nprocs} ranks did not finish within {timeout_s} s (exit codes "
                        f"{[p.exitcode for p in context.processes]})")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    synthetic.generate(str(tmp / "data"), **PRESETS["smoke"].synthetic)  # the default scenes
    spawn_and_join(_worker, (str(tmp / "data"), str(tmp), str(tmp / "store")), WORLD, JOIN_TIMEOUT_S)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread, like each rank (a 2-thread pool on 2 busy cores is several times slower)
    try:
        single = _model(0, per_sample=True)
        train(single, synthetic.KeyedShapes(tmp / "data", "train"), WEIGHTED, str(tmp / "single"), seed=0,
              progress=False)
    finally:
        torch.set_num_threads(threads)
    return tmp, single


def _weights(path):
    return latest_checkpoint(str(path))[1]["model"]


def test_two_processes_match_one_process_on_the_same_global_batch(runs):
    """2 gloo ranks x 2 samples vs 1 process x 4 samples, 6 SGD iterations, float64: every parameter
    and buffer agrees to a normwise relative error of 1e-10 (TOL); measured about 1e-15.

    Why float64. In float32 the two set-ups differ after 6 iterations by up to 2e-2 on these scenes,
    and the cause is not data parallelism: one process that takes the same global batch as two
    weighted halves (exactly what the two ranks compute, in one process, no DDP) differs from one
    batch of 4 by as much. The first gradients agree to 2e-7 (convolutions over 2 samples instead
    of 4 round differently); the weights after one step to 1e-7; but at the second step one
    pre-activation of head.conv52 lies within that rounding of 0, its ReLU switches in one run and
    not in the other, and with a 4x4 feature map per crop that one cell carries about 1/64 of the
    batch's gradient: the next gradients differ by 1e-2 (measured). Loss surfaces with ReLU kinks
    amplify rounding this way; which scenes trigger it is luck (hand-picked scenes hid it before).
    In float64 the same chain starts from 1e-16 and no kink is crossed: 1 process and 2 ranks
    agree to 1e-15, so a 1e-10 bound checks the recipe itself -- the sharding, the loss weighting
    by labelled pixels and their class weights (``WEIGHTED``), DDP's gradient average -- with six orders of magnitude to spare, and a
    wrong recipe (ranks' mean losses averaged without pixel weighting: 4e-2 in float32) fails it.

    BatchNorm and dropout are taken out of the comparison by a test-only tweak (``_model``):
    plain BN normalises each rank's half batch, so it differs from single-process BN by design, and
    PyTorch's SyncBatchNorm (global statistics) runs on CUDA only, so it cannot be checked here.
    """
    tmp, single = runs
    ddp, initial = _weights(tmp / "ddp"), _model(0).state_dict()
    moved = []
    for name, ref in single.state_dict().items():
        if not ref.is_floating_point():
            assert torch.equal(ddp[name], ref), name
            continue
        assert ddp[name].dtype == torch.float64, f"{name}: the ranks did not train in float64"
        scale = max(float(ref.abs().max()), 1e-12)
        err = float((ddp[name] - ref).abs().max()) / scale
        assert err <= TOL, f"{name}: relative difference {err:.2e} > {TOL:.0e}"
        moved.append(float((ref - initial[name]).abs().max()) / scale)
    assert max(moved) > 100 * TOL, "training hardly moved the weights: the comparison would prove nothing"
    log = lambda d: [json.loads(line) for line in (tmp / d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    ddp_log, single_log = log("ddp"), log("single")
    assert [r["iteration"] for r in ddp_log] == list(range(1, 7)), "only rank 0 writes the log"
    for a, b in zip(ddp_log, single_log):
        assert a["loss"] == pytest.approx(b["loss"], rel=TOL), "the logged loss is the global batch's"
    assert sorted(p.name for p in (tmp / "ddp").glob("ckpt_*.pt")) == ["ckpt_000004.pt", "ckpt_000006.pt"]


def test_distributed_resume_equals_uninterrupted(runs):
    """Each rank restores its own dropout RNG from the rank-0 checkpoint: bitwise equal weights."""
    tmp, _ = runs
    straight, resumed = _weights(tmp / "straight"), _weights(tmp / "resumed")
    for name, a in straight.items():
        assert torch.equal(a, resumed[name]), f"{name} differs after a distributed resume"
    assert len(latest_checkpoint(str(tmp / "resumed"))[1]["torch_rng_ranks"]) == WORLD


def test_trained_model_task_launches_torchrun(tmp_path):
    """TrainedModel --nproc 2 runs torch.distributed.run; nproc does not change the output path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "luigi", "--module", "pipeline", "TrainedModel", "--preset", "smoke",
                          "--nproc", "2", "--local-scheduler", "--pipeline-root", str(tmp_path),
                          "--pipeline-progress", "false"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = tmp_path / CODE_VERSION / "runs" / "synthetic" / "smoke" / "seed0" / "both-official"
    params = json.loads((run / "params.json").read_text())
    assert params["params"]["nproc"] == 2 and params["train"]["world_size"] == 2 and params["train"]["finished"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == PRESETS["smoke"].iterations
    state = torch.load(run / "model.pt", weights_only=True)
    assert torch.equal(state["head.conv8.1.weight"], _weights(run / "work")["head.conv8.1.weight"])
