"""pipeline.pack_camvid: the packed CamVid copy reads as the original, val lossless, train lossy JPEG."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from danet import DANet
from pipeline import pack_camvid
from pipeline.datasets import CamVid, read_image, read_label
from pipeline.evaluate import evaluate
from pipeline.presets import get_preset
from tests.test_device_data import make_camvid_scenes


@pytest.fixture
def camvid(tmp_path):
    """CamVid's layout (tests.test_datasets.make_camvid's) with 36 × 48 photo-like scenes."""
    data = tmp_path / "camvid"
    make_camvid_scenes(data, "train", 2)
    make_camvid_scenes(data, "val", 4)
    return data


def test_packed_copy_reads_as_the_original_and_val_is_lossless(camvid, tmp_path):
    record = pack_camvid.pack(str(camvid), str(tmp_path / "packed"))
    assert record["splits"]["val"]["samples"] == 4 and record["splits"]["train"]["samples"] == 2
    assert json.loads((tmp_path / "packed" / "CamVid" / "packed.json").read_text()) == record
    for split in ("train", "val"):
        original, packed = CamVid(camvid, split), CamVid(tmp_path / "packed", split)
        assert packed.verify() == len(original)
        for (image_a, label_a), (image_b, label_b) in zip(original.samples, packed.samples):
            assert image_a.stem == image_b.stem
            assert np.array_equal(read_label(label_a), read_label(label_b))
            with Image.open(image_b) as img:
                assert img.format == ("JPEG" if split == "train" else "WEBP")
            if split == "val":
                assert np.array_equal(read_image(image_a), read_image(image_b))
            else:
                assert read_image(image_b).shape == read_image(image_a).shape


def test_val_miou_of_one_model_on_the_packed_copy_equals_the_original(camvid, tmp_path):
    pack_camvid.pack(str(camvid), str(tmp_path / "packed"))
    torch.manual_seed(0)
    model = DANet(CamVid.NUM_CLASSES, "tiny").eval()
    with torch.no_grad():
        model.head.sa.gamma.fill_(0.7)
        model.head.sc.gamma.fill_(0.3)
    preset = get_preset("camvid-gpu")
    results = [evaluate(model, CamVid(root, "val"), preset, device="cpu", progress=False)
               for root in (camvid, tmp_path / "packed")]
    assert len(set(np.unique(results[0]["confusion"]))) > 2, "a degenerate model proves nothing"
    assert results[0]["confusion"] == results[1]["confusion"]
    assert results[0]["miou"] == results[1]["miou"]


@pytest.mark.parametrize("args,match", [(["--quality", "90"], "quality must be in"),
                                        ([], "exists; give a new folder")])
def test_bad_arguments_are_refused_by_name(camvid, tmp_path, capsys, args, match):
    dst = tmp_path / ("packed" if args else "taken")
    if not args:
        dst.mkdir()
    assert pack_camvid.main([str(camvid), str(dst), *args]) == 2
    assert match in capsys.readouterr().err
    assert args == [] or not dst.exists()


def test_a_source_without_camvid_is_refused(tmp_path, capsys):
    assert pack_camvid.main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "holds no CamVid" in capsys.readouterr().err
