"""Inputs that once gave a wrong answer with exit status 0: each is now refused by name (issue 18, part 1).

Each test here failed on the code before its fix: a NaN checkpoint predicted all class 0, a random
file got torch's ``weights_only`` advice, a misshapen ``conv8.1.weight`` was reported as three
other keys, a float64 checkpoint was rounded to float32.
"""

import os

import numpy as np
import pytest
import torch

from danet import DANet, load_checkpoint
from danet.cli import main
from tests.test_network_parity import randomise

K = 4


@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(0)
    return randomise(DANet(K, "tiny"), seed=1, gamma_pam=0.5, beta_cam=0.2).state_dict()


def _save(tmp_path, state, name="model.pt"):
    path = tmp_path / name
    torch.save(state, path)
    return path


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_checkpoint_is_refused_naming_the_file_and_first_bad_key(tiny_state, tmp_path, bad):
    state = dict(tiny_state)
    for key in ("head.conv6.1.weight", "head.conv8.1.weight"):     # first in the file's order: conv6
        state[key] = state[key].clone()
        state[key][0, 0] = bad
    path = _save(tmp_path, state)
    with pytest.raises(ValueError, match=r"model\.pt.*'head\.conv6\.1\.weight'.*non-finite") as err:
        load_checkpoint(str(path))
    assert "conv8" not in str(err.value)


def test_danet_predict_with_a_nan_checkpoint_exits_non_zero_naming_the_key(tiny_state, tmp_path, capsys):
    from PIL import Image

    state = dict(tiny_state)
    state["head.conv8.1.bias"] = torch.full_like(state["head.conv8.1.bias"], float("nan"))
    path = _save(tmp_path, state, "nan.pt")
    Image.fromarray(np.full((32, 40, 3), 120, np.uint8)).save(tmp_path / "img.png")
    status = main(["predict", str(tmp_path / "img.png"), "--checkpoint", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 1
    assert "head.conv8.1.bias" in err and "nan.pt" in err
    assert not (tmp_path / "out").exists()


def test_random_bytes_are_named_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"weights\.pth.*not a checkpoint") as err:
        load_checkpoint(str(path))
    assert "weights_only" not in str(err.value)


def test_a_misshapen_classifier_is_named_alone(tiny_state, tmp_path):
    state = dict(tiny_state)
    w = state["head.conv8.1.weight"]
    state["head.conv8.1.weight"] = torch.zeros(K + 1, *w.shape[1:])
    with pytest.raises(ValueError, match=r"1 problems\): 'head\.conv8\.1\.weight' has shape") as err:
        load_checkpoint(str(_save(tmp_path, state)))
    assert "conv6" not in str(err.value) and "conv8.1.bias" not in str(err.value)


def test_a_float64_checkpoint_keeps_its_precision(tiny_state, tmp_path):
    state = {k: v.double() if v.is_floating_point() else v for k, v in tiny_state.items()}
    path = _save(tmp_path, state)
    model, info = load_checkpoint(str(path))
    assert info.dtype == "float64"
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} was not kept exactly"
    model32, info32 = load_checkpoint(str(path), dtype=torch.float32)
    assert info32.dtype == "float32" and info32.sources["dtype"] == "argument"
    assert model32.head.conv8[1].weight.dtype == torch.float32
    x = torch.randn(1, 3, 32, 40, dtype=torch.float64)
    with torch.no_grad():
        assert model(x)[0].dtype == torch.float64


def test_a_float64_checkpoint_predicts_through_the_cli(tiny_state, tmp_path):
    from PIL import Image

    state = {k: v.double() if v.is_floating_point() else v for k, v in tiny_state.items()}
    path = _save(tmp_path, state)
    Image.fromarray(np.full((32, 40, 3), 90, np.uint8)).save(tmp_path / "img.png")
    assert main(["predict", str(tmp_path / "img.png"), "--checkpoint", str(path), "--out", str(tmp_path / "o")]) == 0
    assert os.path.exists(tmp_path / "o" / "img_segmentation.png")


def test_a_16_bit_png_is_read_by_its_real_range(tmp_path):
    from PIL import Image

    from danet.images import read_image

    ramp = (np.arange(40 * 30).reshape(30, 40) * 54).astype(np.uint16)      # 0 ... 64746 of 65535
    Image.fromarray(ramp).save(tmp_path / "depth16.png")
    with Image.open(tmp_path / "depth16.png") as img:
        assert img.mode.startswith("I"), img.mode                            # Pillow keeps the 16 bits
    rgb = read_image(tmp_path / "depth16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (30, 40, 3)
    expected = np.round(ramp / 65535 * 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    assert (rgb == 255).mean() < 0.01                                         # not clipped to white


def test_a_32_bit_image_of_unknown_range_is_refused_by_name(tmp_path):
    from PIL import Image

    from danet.images import read_image

    Image.fromarray(np.ones((8, 8), np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match=r"float\.tiff.*mode 'F'"):
        read_image(tmp_path / "float.tiff")


def test_a_huge_image_is_refused_before_decoding_with_an_override(tmp_path, capsys):
    from PIL import Image

    from danet.images import DEFAULT_MAX_PIXELS, read_image

    Image.new("L", (6000, 6000)).save(tmp_path / "huge.png")                 # 36 Mpixel, a small file
    assert 6000 * 6000 > DEFAULT_MAX_PIXELS
    with pytest.raises(ValueError, match=r"huge\.png.*6000×6000 = 36,000,000 pixels .* of 32,000,000 .*--max-pixels"):
        read_image(tmp_path / "huge.png")
    small = tmp_path / "small.png"
    Image.new("RGB", (20, 10)).save(small)
    with pytest.raises(ValueError, match=r"small\.png.*10×20 = 200 pixels is over the limit of 100 "):
        read_image(small, max_pixels=100)
    assert read_image(small, max_pixels=200).shape == (10, 20, 3)
    assert main(["predict", str(tmp_path / "huge.png"), "--checkpoint", "nowhere.pt",
                 "--out", str(tmp_path / "o")]) == 1
    assert "--max-pixels" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_max_pixels_lifts_the_limit_in_the_cli(tiny_state, tmp_path):
    from PIL import Image

    path = _save(tmp_path, tiny_state)
    Image.fromarray(np.full((32, 40, 3), 90, np.uint8)).save(tmp_path / "img.png")
    argv = ["predict", str(tmp_path / "img.png"), "--checkpoint", str(path), "--out", str(tmp_path / "o")]
    assert main(argv + ["--max-pixels", "1000"]) == 1
    assert main(argv + ["--max-pixels", "0"]) == 0


# ---- the pipeline ---------------------------------------------------------------------------------

def test_a_copied_artifact_root_reads_its_own_data(pipeline_root, tmp_path):
    import json
    import shutil

    import luigi

    from pipeline import PreparedDataset, build

    assert luigi.build([PreparedDataset(preset="smoke")], local_scheduler=True)
    record_a = PreparedDataset(preset="smoke").output().path
    assert json.loads(open(record_a).read())["data_dir"] == "."          # relative to the record
    shutil.copytree(pipeline_root, tmp_path / "B")                        # cp -r A B, then A goes away
    shutil.rmtree(pipeline_root)
    record_b = str(tmp_path / "B" / os.path.relpath(record_a, pipeline_root))
    record = build.read_dataset(record_b)
    assert record["data_dir"] == os.path.dirname(record_b)
    assert len(build.load_dataset(record, "train")) == 8
    with pytest.raises(ValueError, match=r"data_dir '\.' is relative.*read_dataset"):   # the raw record, unresolved
        build.load_dataset(json.loads(open(record_b).read()), "train")


def test_data_root_for_the_built_in_dataset_is_refused(pipeline_root):
    from pipeline import PreparedDataset

    with pytest.raises(ValueError, match=r"--data-root '/nonexistent': dataset 'synthetic' is generated"):
        PreparedDataset(preset="smoke", data_root="/nonexistent")


def _complete(task):
    """Make a task look complete: its outputs exist."""
    import luigi

    for target in luigi.task.flatten(task.output()):
        os.makedirs(os.path.dirname(target.path), exist_ok=True)
        open(target.path, "w").write("{}")


def test_the_task_lock_is_keyed_on_the_output_path(pipeline_root, monkeypatch):
    import contextlib

    from pipeline import TrainedModel, artifacts
    from pipeline.presets import PRESETS

    plain = TrainedModel(preset="smoke")
    spelled_out = TrainedModel(preset="smoke", overrides={"iterations": PRESETS["smoke"].iterations})
    assert plain.task_id != spelled_out.task_id and plain.output().path == spelled_out.output().path
    taken = []
    monkeypatch.setattr(artifacts, "exclusive_lock", lambda root, name: taken.append(name) or contextlib.nullcontext())
    _complete(plain)
    plain.run()
    spelled_out.run()
    assert len(taken) == 2 and taken[0] == taken[1]


def test_a_task_start_removes_the_temporaries_of_dead_writers(pipeline_root):
    import subprocess
    import sys

    from pipeline import TrainedModel

    task = TrainedModel(preset="smoke")
    _complete(task)
    work = os.path.join(os.path.dirname(task.output().path), "work")
    os.makedirs(work)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"dead": f".ckpt_000400.pt.tmp-{dead.pid}", "ours": f".ckpt_000800.pt.tmp-{os.getpid()}",
                 "alive": f".metrics.jsonl.tmp-{alive.pid}"}
        for name in names.values():
            open(os.path.join(work, name), "wb").write(b"half a checkpoint")
        task.run()
        left = set(os.listdir(work))
    finally:
        alive.kill()
    assert names["dead"] not in left
    assert {names["ours"], names["alive"]} <= left
