"""Data-parallel training, one process per GPU (or CPU share), launched by torchrun::

    torchrun --standalone --nproc_per_node=4 -m pipeline.distributed \\
        --dataset-dir artifacts/v1/data/synthetic-cpu --preset cpu --attention both --seed 0 --out run/

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
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m pipeline.distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset-dir", required=True, help="a prepared dataset (PreparedDataset's data_dir)")
    p.add_argument("--dataset", default="synthetic", help="synthetic | camvid | voc2012 | cityscapes | ade20k")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--attention", default="both", choices=("none", "pam", "cam", "both"))
    p.add_argument("--cam-variant", default="official", choices=("official", "paper"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="work directory: checkpoints, metrics.jsonl, summary.json")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm (CUDA only), whatever the preset says")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many iterations (tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from pipeline.presets import get_preset, validate
    from pipeline.tasks import build_model, load_dataset, write_json_atomic
    from pipeline.train import train

    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    if "RANK" in os.environ and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    try:
        preset = get_preset(args.preset)
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
            write_json_atomic(os.path.join(args.out, "summary.json"), summary)
        return summary
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
