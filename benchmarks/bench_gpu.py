"""DANet on one GPU: training images/s, inference frames/s and peak GPU memory, mixed precision.

What is measured (random weights and data; throughput does not depend on them)
    * Training, the official recipe's shape: ResNet-50 and ResNet-101 DANet, output stride 8,
      19 classes, crop 768×768 (``--crop``; ``--train-sizes 512x1024,768x768`` for several, as
      mmsegmentation's 512×1024 Cityscapes table), batch 8 (``--batch``), SGD with momentum, loss
      CE(fused) + CE(pam) + CE(cam) with ignore index 255. Images/s over ``--iters`` steps after
      ``--warmup`` steps; peak ``torch.cuda.max_memory_allocated`` over those steps; the FLOPs of
      one training image (forward + backward, counted by ``torch.utils.flop_counter`` on the meta
      device) and so the TFLOP/s reached, to set against the GPU's peak.
      PAM ``--train-pam-impl`` (default ``explicit``, as the official code; N = 96² = 9,216).
    * Inference, batch 1, eval, ``torch.inference_mode``: a whole 1024×2048 Cityscapes image
      (N = 32,768; the explicit N×N matrix alone would be 4 GiB in float32) and 512×1024
      (mmsegmentation's table), PAM ``--pam-impl`` (default ``sdpa``, memory-bounded).
      Frames/s over ``--iters`` forwards after ``--warmup``; peak memory as above.
    * Mixed precision by default: ``torch.autocast("cuda", torch.bfloat16)``; the attention
      softmaxes run in float32 under autocast (``danet.attention._softmax_lastdim``; checked
      before measuring). ``--no-amp`` measures float32. ``--channels-last`` and ``--compile``
      (``torch.compile`` of the model) are optional.

mmsegmentation's published figures for DANet R-50-D8, 512×1024 Cityscapes, 40k schedule
(7.4 GB training memory per GPU with their per-GPU batch, 2.66 inference fps on a V100)
are printed beside ours as context: a different GPU, batch and code, so not a bar.

Without a CUDA device the script prints "no CUDA device: nothing measured" and exits 0.
Usage: ``python benchmarks/bench_gpu.py [--backbones resnet50,resnet101] [--batch 8] [--crop 768] [--train-sizes HxW,...]
[--sizes 1024x2048,512x1024] [--iters 10] [--warmup 3] [--no-amp] [--channels-last] [--compile]
[--skip-train] [--skip-infer] [--json out.json] [--device cpu]``. ``--device cpu`` is a smoke run of
the code path (small sizes, no memory figures), not a measurement.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from danet import DANet

NUM_CLASSES = 19
IGNORE_INDEX = 255
MMSEG_REFERENCE = {"model": "DANet R-50-D8", "crop": "512x1024", "dataset": "Cityscapes, 40k iterations",
                   "train_memory_gb": 7.4, "inference_fps": 2.66, "gpu": "V100",
                   "source": "mmsegmentation configs/danet README"}
NO_CUDA_MESSAGE = "no CUDA device: nothing measured"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    """torch.cuda.max_memory_allocated since the last reset, GiB (None off CUDA: not measured)."""
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def _autocast(device: str, amp: bool):
    return torch.autocast(device, dtype=torch.bfloat16, enabled=amp)


def _build(backbone: str, pam_impl: str, args):
    model = DANet(NUM_CLASSES, backbone, pam_impl=pam_impl).to(args.device)
    with torch.no_grad():                      # γ = β = 0 makes the modules the identity; not here
        model.head.sa.gamma.fill_(0.5)
        model.head.sc.gamma.fill_(0.5)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    runner = torch.compile(model) if args.compile else model
    return model, runner


def check_softmax_float32(device: str) -> dict:
    """Under bf16 autocast the PAM (explicit) and CAM attention come out of softmax in float32."""
    from danet import ChannelAttention, PositionAttention

    pam, cam = PositionAttention(64).to(device), ChannelAttention().to(device)
    A = torch.randn(1, 64, 8, 8, device=device)
    with torch.no_grad(), _autocast(device, True):
        _, pam_mid = pam.forward_with_intermediates(A)
        _, cam_mid = cam.forward_with_intermediates(A)
    found = {"energy": str(pam_mid["energy"].dtype), "pam_softmax": str(pam_mid["S"].dtype),
             "cam_softmax": str(cam_mid["attention"].dtype)}
    if pam_mid["S"].dtype != torch.float32 or cam_mid["attention"].dtype != torch.float32:
        raise RuntimeError(f"bench_gpu: attention softmax is not float32 under autocast: {found}")
    return found


def train_flops_per_image(backbone: str, size: tuple[int, int]) -> float:
    """FLOPs of one training image (forward and backward of the three logits' sum), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = DANet(NUM_CLASSES, backbone)
        x = torch.randn(1, 3, *size)
    counter = FlopCounterMode(display=False)
    with counter:
        sum(o.sum() for o in model(x)).backward()
    return float(counter.get_total_flops())


def bench_train(backbone: str, size: tuple[int, int], args) -> dict:
    torch.manual_seed(0)
    model, runner = _build(backbone, args.train_pam_impl, args)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9, weight_decay=1e-4)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, *size, device=args.device).contiguous(memory_format=fmt)
    y = torch.randint(0, NUM_CLASSES, (args.batch, *size), device=args.device)
    y[:, :16] = IGNORE_INDEX                                        # some ignored pixels, as in real labels

    def step():
        with _autocast(args.device, args.amp):
            outputs = runner(x)                                     # 3 × (B, K, H, W)
        loss = sum(F.cross_entropy(o.float(), y, ignore_index=IGNORE_INDEX) for o in outputs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    row = {"task": "train", "backbone": backbone, "batch": args.batch, "size": list(size),
           "pam_impl": model.head.sa.impl, "tflop_per_image": train_flops_per_image(backbone, size) / 1e12}
    try:
        for _ in range(args.warmup):
            step()
        _sync(args.device)
        _reset_peak(args.device)
        t0 = time.perf_counter()
        for _ in range(args.iters):
            loss = step()
        _sync(args.device)
        seconds = time.perf_counter() - t0
        row.update(images_per_s=args.batch * args.iters / seconds, seconds_per_iter=seconds / args.iters,
                   peak_gib=_peak_gib(args.device), loss=float(loss.detach()))
        row["tflop_per_s"] = row["images_per_s"] * row["tflop_per_image"]
    except torch.cuda.OutOfMemoryError as e:
        row.update(error=f"out of memory: {str(e).splitlines()[0]}")
    del model, runner, opt
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return row


def bench_infer(backbone: str, size: tuple[int, int], args) -> dict:
    torch.manual_seed(0)
    model, runner = _build(backbone, args.pam_impl, args)
    model.eval()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(1, 3, *size, device=args.device).contiguous(memory_format=fmt)
    row = {"task": "infer", "backbone": backbone, "batch": 1, "size": list(size), "pam_impl": model.head.sa.impl,
           "N": (size[0] // 8) * (size[1] // 8)}
    try:
        with torch.inference_mode(), _autocast(args.device, args.amp):
            for _ in range(args.warmup):
                runner(x)
            _sync(args.device)
            _reset_peak(args.device)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                out = runner(x)[0]                                  # fused logits (1, K, H0, W0)
            _sync(args.device)
            seconds = time.perf_counter() - t0
        row.update(frames_per_s=args.iters / seconds, seconds_per_frame=seconds / args.iters,
                   peak_gib=_peak_gib(args.device),
                   logits_finite=bool(torch.isfinite(out).all()))
    except torch.cuda.OutOfMemoryError as e:
        row.update(error=f"out of memory: {str(e).splitlines()[0]}")
    del model, runner
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return row


def _print(result: dict) -> None:
    print(f"DANet on {result['device']}, torch {result['torch']}, "
          f"{'bf16 autocast' if result['amp'] else 'float32'}"
          f"{', channels_last' if result['channels_last'] else ''}{', torch.compile' if result['compile'] else ''}; "
          f"softmax dtypes under autocast: {result['softmax_check']}")
    print(f"{'task':>6} {'backbone':>10} {'batch':>5} {'size':>10} {'PAM':>9} {'throughput':>30} {'peak GiB':>9}")
    for r in result["rows"]:
        size = f"{r['size'][0]}x{r['size'][1]}"
        if "error" in r:
            value, peak = r["error"][:40], "-"
        else:
            value = (f"{r['images_per_s']:.2f} img/s, {r['tflop_per_s']:.1f} TFLOP/s" if r["task"] == "train"
                     else f"{r['frames_per_s']:.2f} frames/s")
            peak = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"{r['task']:>6} {r['backbone']:>10} {r['batch']:>5} {size:>10} {r['pam_impl']:>9} {value:>30} {peak:>9}")
    ref = MMSEG_REFERENCE
    print(f"Context, not a bar — {ref['source']}: {ref['model']} {ref['crop']} ({ref['dataset']}): "
          f"{ref['train_memory_gb']} GB training memory per GPU (their batch per GPU), "
          f"{ref['inference_fps']} inference fps on a {ref['gpu']}.")


def _sizes(ap, flag: str, text: str) -> list[tuple[int, int]]:
    try:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s]
        if not sizes or any(len(s) != 2 or min(s) < 8 for s in sizes):
            raise ValueError
    except ValueError:
        ap.error(f"{flag}: expected HxW[,HxW...] with H, W >= 8, got {text!r}")
    return sizes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="resnet50,resnet101")
    ap.add_argument("--batch", type=int, default=8, help="training batch (official recipe: 8)")
    ap.add_argument("--crop", type=int, default=768, help="training crop (official recipe: 768)")
    ap.add_argument("--train-sizes", default=None, help="training crops HxW[,HxW...] (default: --crop square)")
    ap.add_argument("--sizes", default="1024x2048,512x1024", help="inference image sizes HxW")
    ap.add_argument("--pam-impl", default="sdpa", choices=("explicit", "chunked", "sdpa"),
                    help="PAM implementation for inference (default sdpa, memory-bounded)")
    ap.add_argument("--train-pam-impl", default="explicit", choices=("explicit", "chunked", "sdpa"),
                    help="PAM implementation for training (default explicit, as the official code)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-amp", dest="amp", action="store_false", help="float32 instead of bf16 autocast")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-infer", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cpu: a smoke run of the code path only (use a small --backbones tiny "
                         "--batch 1 --crop 64 --sizes 64x128); no memory figures")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE)
        return 0
    sizes = _sizes(ap, "--sizes", args.sizes)
    train_sizes = _sizes(ap, "--train-sizes", args.train_sizes or f"{args.crop}x{args.crop}")
    backbones = [b for b in args.backbones.split(",") if b]
    torch.backends.cudnn.benchmark = True
    result = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu (smoke run)",
              "torch": torch.__version__, "amp": args.amp,
              "channels_last": args.channels_last, "compile": args.compile,
              "softmax_check": check_softmax_float32(args.device),
              "reference": MMSEG_REFERENCE, "rows": []}
    if args.json:
        from pipeline.artifacts import write_json  # here: loading it brings numpy and torch
    for backbone in backbones:
        jobs = [(bench_train, s) for s in ([] if args.skip_train else train_sizes)]
        jobs += [(bench_infer, s) for s in ([] if args.skip_infer else sizes)]
        for bench, size in jobs:
            result["rows"].append(_row(bench, backbone, size, args))
            if args.json:
                write_json(args.json, result)   # after every row (atomic): a run cut short keeps its rows
    _print(result)
    failed = [r for r in result["rows"] if "error" in r and not r["error"].startswith("out of memory")]
    return 1 if failed else 0


def _row(bench, backbone: str, size: tuple[int, int], args) -> dict:
    """``bench(backbone, size, args)`` (:func:`bench_train` or :func:`bench_infer`). Running out of
    memory is a result, recorded inside; any other error becomes this row's ``error`` (and makes the
    exit status 1), so that one row that fails -- a kernel refusing a shape -- does not cost the others."""
    try:
        return bench(backbone, size, args)
    except Exception as e:
        if args.device == "cuda":
            torch.cuda.empty_cache()
        train = bench is bench_train
        return {"task": "train" if train else "infer", "backbone": backbone, "batch": args.batch if train else 1,
                "size": list(size), "pam_impl": args.train_pam_impl if train else args.pam_impl,
                "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]}


if __name__ == "__main__":
    sys.exit(main())
