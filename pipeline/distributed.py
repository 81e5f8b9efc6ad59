"""Data-parallel training, one process per GPU (or CPU share), launched by torchrun::

    torchrun --standalone --nproc_per_node=4 -m pipeline.distributed \\
        --dataset-dir artifacts/v2/data/synthetic-cpu --preset cpu --attention both --seed 0 --out run/

(``python -m torch.distributed.run`` is the same launcher.) Backend NCCL when CUDA is visible,
gloo on CPUs. The loop is :func:`pipeline.train.train`, which notices the process group: rank r
trains on the r-th slice of every global batch of ``batch_plan`` (``preset.batch_size`` is the
*global* batch and must divide by the number of processes), gradients are averaged by
DistributedDataParallel, and rank 0 alone writes ``metrics.jsonl``, checkpoints and ``summary.json``.
Resumption works as in one process: rerun the same command and every rank loads the checkpoint
rank 0 picked.

BatchNorm: plain BN normalises each rank's share of the batch on its own (the usual data-parallel
behaviour; its running statistics are rank 0's, broadcast by DDP). ``--sync-bn`` (or a preset with
``sync_bn``, as the paper's) turns them into SyncBatchNorm, whose statistics are those of the global
batch -- PyTorch implements it for CUDA only, so on CPUs ``--sync-bn`` is refused and a preset's
``sync_bn`` falls back to plain BN with a warning.

Without torchrun's environment (no ``RANK``) it trains in this one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import faulthandler
import gc
import os
import sys
import traceback

import numpy as np
import torch
import torch.distributed as dist

from danet.attention import CAM_VARIANTS
from danet.head import ATTENTIONS

DEFAULT_TIMEOUT_S = 1800  # a rank that waits longer than this on the others fails instead of hanging


def init_distributed(backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs) -> tuple[int, int]:
    """Join the process group that torchrun (or ``kwargs``: init_method, rank, world_size) describes.

    Backend NCCL with CUDA, gloo otherwise; a finite ``timeout_s`` for every collective, so a rank
    whose peer died raises instead of waiting forever. Returns (rank, world size).
    """
    faulthandler.enable()  # a fatal signal (SIGABRT, SIGSEGV) prints every thread's Python stack
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend or ("nccl" if cuda else "gloo"),
                            timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return dist.get_rank(), dist.get_world_size()


def shutdown_distributed() -> None:
    """Leave the process group cleanly: free what still holds it, then destroy it.

    A DistributedDataParallel wrapper keeps a reference to the group (its reducer) and sits in
    reference cycles, so it outlives ``train`` until the garbage collector runs. Destroying the
    group while it is alive leaves gloo's worker threads running.
    """
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_rank(code: int = 0) -> None:
    """End this rank's process now, after flushing its output, without interpreter shutdown.

    Interpreter shutdown destroys C++ objects in no particular order; a gloo thread still joinable
    at that moment makes the C++ runtime call ``std::terminate`` ("terminate called without an
    active exception", SIGABRT) -- under load, long after the work succeeded. A rank has written
    and synced everything by now, so nothing is lost by skipping that teardown.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_rank(fn, *args, **kwargs) -> None:
    """Run ``fn`` as one rank's whole life: its exit code is 0, or 1 with the traceback printed."""
    code = 0
    try:
        fn(*args, **kwargs)
    except SystemExit as stop:
        if stop.code not in (None, 0):
            print(stop.code if isinstance(stop.code, str) else "", file=sys.stderr)
            code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001 -- printed, then the exit code says it failed
        traceback.print_exc()
        code = 1
    finally:
        shutdown_distributed()
    exit_rank(code)


def launch(nproc: int, *, dataset: str, dataset_dir: str, preset, attention: str, cam_variant: str,
           seed: int, out: str, progress: bool = True) -> dict:
    """Train in ``nproc`` processes: ``python -m torch.distributed.run --standalone
    --nproc_per_node=nproc -m pipeline.distributed ...``; returns rank 0's ``summary.json``.
    ``preset`` (a Preset, overrides included) reaches the processes as ``<out>/preset.json``."""
    import subprocess

    from pipeline.artifacts import read_json, write_json

    preset_json = os.path.join(os.path.abspath(out), "preset.json")
    write_json(preset_json, preset.as_dict())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "pipeline.distributed", "--dataset", dataset, "--dataset-dir", dataset_dir, "--preset", preset_json,
           "--attention", attention, "--cam-variant", cam_variant, "--seed", str(seed), "--out", os.path.abspath(out)]
    if not progress:
        cmd.append("--no-progress")
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")]))}
    print(" ".join(cmd), file=sys.stderr)
    rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        raise RuntimeError(f"distributed training ({nproc} processes) exited with code {rc}; its output is "
                           f"above; rerunning resumes from the last checkpoint in {out}")
    return read_json(os.path.join(out, "summary.json"))


def parse_args(argv=None):
    from pipeline.datasets import DATASETS

    p = argparse.ArgumentParser(prog="python -m pipeline.distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset-dir", required=True, help="a prepared dataset (PreparedDataset's data_dir)")
    p.add_argument("--dataset", default="synthetic", help=" | ".join(DATASETS))
    p.add_argument("--preset", default="cpu", help="a preset name, or a JSON file of every preset field")
    p.add_argument("--attention", default="both", choices=ATTENTIONS)
    p.add_argument("--cam-variant", default="official", choices=CAM_VARIANTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="work directory: checkpoints, metrics.jsonl, summary.json")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm (CUDA only), whatever the preset says")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many iterations (tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
                   help="how long a rank waits on the others in a collective before failing")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from pipeline.artifacts import read_json, write_json
    from pipeline.build import build_model, load_dataset
    from pipeline.presets import from_dict, get_preset, validate
    from pipeline.train import train

    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    if "RANK" in os.environ and not dist.is_initialized():
        init_distributed(timeout_s=args.timeout_s)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    try:
        preset = from_dict(read_json(args.preset)) if args.preset.endswith(".json") else get_preset(args.preset)
        validate(preset)
        sync_bn = args.sync_bn or preset.sync_bn
        if sync_bn and not cuda and world > 1:
            if args.sync_bn:
                raise SystemExit("--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only; on CPUs leave it off "
                                 "(each process then normalises its share of the batch)")
            if rank == 0:
                print(f"warning: preset {preset.name!r} asks for SyncBatchNorm, which needs CUDA; "
                      "using plain BatchNorm per process", file=sys.stderr)
            sync_bn = False
        data = load_dataset({"dataset": args.dataset, "data_dir": os.path.abspath(args.dataset_dir)}, "train")
        torch.manual_seed(args.seed)  # as TrainedModel does: the same initial weights on every rank
        np.random.seed(args.seed)
        if rank > 0:
            dist.barrier()  # rank 0 fetches pretrained backbone weights into the cache first
        model = build_model(dataclasses.replace(preset, sync_bn=False), type(data).NUM_CLASSES,
                            args.attention, args.cam_variant)
        if rank == 0 and world > 1:
            dist.barrier()
        if sync_bn and world > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same state_dict names as BN
        summary = train(model, data, preset, args.out, seed=args.seed, progress=not args.no_progress,
                        stop_after=args.stop_after)
        summary["sync_bn"] = bool(sync_bn and world > 1)
        if rank == 0:
            write_json(os.path.join(args.out, "summary.json"), summary)
        return summary
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    run_rank(main)
