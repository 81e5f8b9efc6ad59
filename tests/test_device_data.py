"""The training set augmented on the device (pipeline.device_data) against the CPU path it stands in for.

Run on CPU tensors: the code is the same on a GPU. Labels must be identical to PIL's; images may
differ by one grey level (PIL resizes in fixed point).
"""

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.datasets import CamVid, RandomScaleCropFlip
from pipeline.device_data import DeviceBatches, augment, nearest_index
from pipeline.presets import get_preset, with_fields
from pipeline.train import batch_plan, train
from tests.test_datasets import save

H, W = 36, 48


def smooth_image(seed: int) -> np.ndarray:
    """A photo-like uint8 (H, W, 3) image: a blurred random field, so resizing has something to do."""
    coarse = np.random.default_rng(seed).integers(0, 256, (H // 6, W // 6, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((W, H), Image.BICUBIC))


def block_label(seed: int) -> np.ndarray:
    """An (H, W) label of 3×4-pixel blocks of classes 0-11 (11 = CamVid's void)."""
    return np.kron(np.random.default_rng(seed).integers(0, 12, (H // 3, W // 4)), np.ones((3, 4), int)).astype(np.uint8)


def make_camvid_scenes(root: Path, split: str, n: int) -> Path:
    lines = []
    for i in range(n):
        name = f"0001TP_{i:06d}.png"
        save(smooth_image(i), root / "CamVid" / split / name)
        save(block_label(i), root / "CamVid" / f"{split}annot" / name)
        lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
    (root / "CamVid" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def as_tensors(image, label):
    return torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(label.copy())


@settings(max_examples=60, deadline=None)
@given(n_in=st.integers(1, 300), n_out=st.integers(1, 600))
def test_nearest_index_is_pils_nearest_resize(n_in, n_out):
    row = np.arange(n_in, dtype=np.int32)[None] % 256                         # (1, n_in): value = its index
    pil = np.asarray(Image.fromarray(row.astype(np.uint8)).resize((n_out, 1), Image.NEAREST))[0]
    assert np.array_equal(pil, np.asarray(nearest_index(n_in, n_out)) % 256)


@pytest.mark.parametrize("scale_range,crop", [((0.5, 1.0), 24), ((0.75, 1.5), 40), ((1.0, 2.0), 32),
                                              (None, 30), ((0.4, 0.6), None)])
@pytest.mark.parametrize("seed", range(4))
def test_device_augmentation_draws_and_applies_what_the_cpu_path_does(scale_range, crop, seed):
    image, label = smooth_image(seed), block_label(seed)
    transform = RandomScaleCropFlip(crop, scale_range, flip=True)
    cpu_image, cpu_label = transform(image, label, np.random.default_rng(seed))
    draws = transform.draw(H, W, np.random.default_rng(seed))
    dev_image, dev_label = augment(*as_tensors(image, label), *draws, crop)
    assert dev_image.dtype == torch.uint8 and dev_label.dtype == torch.uint8
    assert np.array_equal(dev_label.numpy(), cpu_label), "labels differ from PIL's nearest resize"
    diff = np.abs(dev_image.numpy().transpose(1, 2, 0).astype(int) - cpu_image.astype(int))
    assert diff.max() <= 1, f"image differs from PIL's by {diff.max()} levels"


def test_padding_below_the_crop_is_mean_colour_and_ignore():
    image, label = smooth_image(0), block_label(0)
    draws = ((18, 24), (0, 0), False)                                          # half size, crop 40 > 18 x 24
    dev_image, dev_label = augment(*as_tensors(image, label), *draws, 40)
    cpu_image, cpu_label = RandomScaleCropFlip(40, (0.5, 0.5), flip=False)(image, label, np.random.default_rng(0))
    assert (dev_label[18:] == 255).all() and (dev_label[:, 24:] == 255).all()
    assert np.array_equal(dev_label.numpy(), cpu_label)
    assert np.abs(dev_image.numpy().transpose(1, 2, 0).astype(int) - cpu_image.astype(int)).max() <= 1


def test_device_batches_equal_the_dataloader_batches(tmp_path):
    """The same plan of (index, seed) gives the same batches as the dataset read through the transform."""
    make_camvid_scenes(tmp_path, "train", 5)
    dataset = CamVid(tmp_path, "train")
    transform = RandomScaleCropFlip(32, (0.75, 1.5), flip=True)
    plan = list(batch_plan(len(dataset), 3, seed=7, start=0, stop=4))
    view = CamVid(tmp_path, "train", transform=transform)
    batches = DeviceBatches(dataset, transform, plan, "cpu")
    assert len(batches) == 4 and batches.load_seconds >= 0
    for items, (x, y) in zip(plan, batches):
        expected = [view[item] for item in items]
        assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(y, torch.stack([e[1] for e in expected]))
        # one grey level after normalisation is 1 / (255 · std) <= 0.0175
        assert (x - torch.stack([e[0] for e in expected])).abs().max() <= 1 / (255 * 0.224) + 1e-6


def test_training_on_device_data_in_channels_last_records_data_and_step_time(tmp_path):
    make_camvid_scenes(tmp_path / "data", "train", 4)
    dataset = CamVid(tmp_path / "data", "train")
    preset = with_fields(get_preset("camvid-gpu"), {"backbone": "tiny", "batch_size": 2, "crop_size": 32,
                                                    "iterations": 6, "checkpoint_every": 6, "log_every": 2})
    assert preset.data_on_device and preset.channels_last
    from danet import DANet

    torch.manual_seed(0)
    model = DANet(CamVid.NUM_CLASSES, "tiny")
    summary = train(model, dataset, preset, str(tmp_path / "run"), progress=False)
    timing = summary["timing"]
    assert summary["finished"] and summary["iterations"] == 6
    assert 0 < timing["data_seconds"] < timing["data_seconds"] + timing["step_seconds"] <= summary["seconds"] + 1e-3
    assert 0 < timing["data_share"] < 1 and timing["steady_iterations_per_s"] > 0
    assert timing["data_on_device_load_seconds"] > 0
    conv = model.pretrained.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_on_cuda_the_data_clock_starts_after_the_steps_queued_work(monkeypatch):
    """The step's backward still runs on the GPU when the next batch is asked for: waiting for it
    is step time. Without the synchronisation the first blocking copy while building the batch
    waits for it instead, and the step's time is booked as data time."""
    from pipeline.train import _Timer

    waited = []

    def synchronize(device=None):                                  # stands in for a GPU finishing a step
        time.sleep(0.05)
        waited.append(torch.device(device))

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    timer = _Timer("cuda")
    timer.wait_for_batch()
    timer.batch_arrived()
    assert waited == [torch.device("cuda")] and timer.data_s < 0.05
    cpu = _Timer("cpu")
    cpu.wait_for_batch()
    assert waited == [torch.device("cuda")]                           # nothing to wait for on the CPU
