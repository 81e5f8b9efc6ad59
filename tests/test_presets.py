"""Presets you can change: overrides and preset files, checked by field; every change reaches the paths."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.presets import PRESETS, from_dict, preset_key, resolve
from pipeline.tasks import FullReport, PreparedDataset, TrainedModel

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_replace_fields_and_lists_become_tuples():
    p = resolve("cpu", {"iterations": 3000, "crop_size": 320, "scale_range": [0.5, 2.0], "lr": 1})
    assert (p.iterations, p.crop_size, p.scale_range, p.lr) == (3000, 320, (0.5, 2.0), 1.0)
    assert p.batch_size == PRESETS["cpu"].batch_size
    assert from_dict(json.loads(json.dumps(p.as_dict()))) == p


@pytest.mark.parametrize("overrides,match", [
    ({"iterationz": 10}, "unknown field 'iterationz'"),
    ({"iterations": "10"}, "field 'iterations' must be int"),
    ({"flip": 1}, "field 'flip' must be bool"),
    ({"crop_size": 1.5}, "field 'crop_size' must be int | None"),
    ({"lr": None}, "field 'lr' must be float"),
])
def test_bad_overrides_are_refused_by_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve("cpu", overrides)


def test_a_preset_file_is_read_and_named_after_itself(tmp_path):
    f = tmp_path / "my_camvid.toml"
    f.write_text('base = "smoke"\niterations = 9\nscale_range = [0.75, 1.25]\n')
    p = resolve("cpu", preset_file=str(f))
    assert (p.name, p.iterations, p.scale_range, p.batch_size) == ("my_camvid", 9, (0.75, 1.25), PRESETS["smoke"].batch_size)
    f.write_text("iterations = [1, 2]\n")
    with pytest.raises(ValueError, match=r"preset file .*my_camvid.toml.*field 'iterations' must be int"):
        resolve("cpu", preset_file=str(f))
    f.write_text("iterations = \n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        resolve("cpu", preset_file=str(f))
    with pytest.raises(ValueError, match="does not exist"):
        resolve("cpu", preset_file=str(tmp_path / "nope.toml"))


def test_every_change_changes_the_path():
    assert preset_key(PRESETS["cpu"]) == "cpu"
    a = TrainedModel(preset="smoke", overrides={"iterations": 7})
    b = TrainedModel(preset="smoke", overrides={"iterations": 8})
    c = TrainedModel(preset="smoke")
    paths = {t.output().path for t in (a, b, c)}
    assert len(paths) == 3
    assert "/smoke-" in a.output().path and "/smoke/" in c.output().path
    # the dataset generated for a changed preset is its own too (its size can depend on the preset)
    assert PreparedDataset(preset="smoke", overrides={"iterations": 7}).output().path != PreparedDataset(preset="smoke").output().path


def test_two_copies_of_a_dataset_never_share_results(tmp_path):
    from tests.test_datasets import make_camvid

    for name in ("copy1", "copy2"):
        for split in ("train", "val"):
            make_camvid(tmp_path / name, split)
    one = FullReport(dataset="camvid", data_root=str(tmp_path / "copy1"), preset="smoke")
    two = FullReport(dataset="camvid", data_root=str(tmp_path / "copy2"), preset="smoke")
    assert one.output()["json"].path != two.output()["json"].path
    assert PreparedDataset(**one.common()).output().path != PreparedDataset(**two.common()).output().path


def test_without_a_preset_a_dataset_trains_with_its_own(tmp_path):
    from tests.test_datasets import make_camvid

    for split in ("train", "val"):
        make_camvid(tmp_path, split)
    plain = FullReport(dataset="camvid", data_root=str(tmp_path))
    assert plain.preset == "camvid" and plain.get_preset().name == "camvid"        # was the built-in data's cpu
    assert plain is FullReport(dataset="camvid", data_root=str(tmp_path), preset="camvid")
    assert FullReport().preset == "cpu" and FullReport().task_id == FullReport(preset="cpu").task_id
    assert FullReport(dataset="camvid", data_root=str(tmp_path), preset="smoke").get_preset().name == "smoke"


def test_a_missing_or_wrong_data_root_is_refused_with_the_expected_layout(tmp_path):
    with pytest.raises(ValueError, match=r"(?s)--data-root '.*typo' does not exist.*CamVid/"):
        PreparedDataset(dataset="camvid", data_root=str(tmp_path / "typo"))
    (tmp_path / "camvid.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"(?s)--data-root '.*camvid.zip' is a file, not a folder.*CamVid/"):
        PreparedDataset(dataset="camvid", data_root=str(tmp_path / "camvid.zip"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"(?s)holds no voc2012 data; expected under it\n.*VOCdevkit"):
        PreparedDataset(dataset="voc2012", data_root=str(tmp_path / "empty"))
    assert not list(tmp_path.rglob("*.json"))


def test_bad_parameters_are_refused_before_any_work(tmp_path):
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "FullReport", "--preset", "smoke",
           "--pipeline-root", str(tmp_path / "art")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for extra, message in ([["--overrides", '{"batch_size": 0}'], "batch_size must be >= 1"],
                           [["--overrides", '{"iterationz": 3}'], "unknown field 'iterationz'"],
                           [["--seed", "-1"], "seed must be >= 0"]):
        res = subprocess.run(cmd + extra, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and message in res.stdout + res.stderr, (extra, res.stderr[-1500:])
    assert not [p for p in (tmp_path / "art").rglob("*") if p.is_file() and p.suffix != ".lock"]


def test_params_json_records_the_effective_preset(tmp_path):
    import luigi

    config = luigi.configuration.get_config()
    config.set("pipeline", "root", str(tmp_path))
    config.set("pipeline", "progress", "false")
    try:
        task = TrainedModel(preset="smoke", overrides={"iterations": 2, "log_every": 1})
        assert luigi.build([task], local_scheduler=True)
        record = json.loads(Path(task.output().path).read_text())
        assert record["preset"]["iterations"] == 2 and record["train"]["iterations"] == 2
        assert record["params"]["overrides"] == {"iterations": 2, "log_every": 1}
    finally:
        config.set("pipeline", "root", "artifacts")


def _torchvision_file(path, arch):
    """A torchvision-layout ResNet state_dict (random weights, an ImageNet ``fc``) of danet's ``arch``."""
    import torch

    from danet.backbone import ResNet

    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in ResNet(arch).state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512 if arch != "tiny" else 128)
    torch.save(state, path)
    return state


def test_the_camvid_preset_uses_imagenet_weights_when_given_them(tmp_path):
    import torch

    from pipeline.build import build_model

    assert PRESETS["camvid"].backbone == "tiny" and PRESETS["camvid"].pretrained_backbone is None
    state = _torchvision_file(tmp_path / "resnet18.pth", "resnet18")
    p = resolve("camvid", {"pretrained_backbone": str(tmp_path / "resnet18.pth")})
    assert p.backbone == "resnet18"                    # tiny has no ImageNet weights: the file's ResNet is used
    assert p.as_dict() == {**PRESETS["camvid"].as_dict(), "backbone": "resnet18",
                           "pretrained_backbone": str(tmp_path / "resnet18.pth")}   # nothing else changed
    assert preset_key(p) != preset_key(PRESETS["camvid"])
    model = build_model(p, 11, "both", "official")
    for name in ("conv1.weight", "layer3.1.conv2.weight", "layer4.1.bn2.running_var"):
        torch.testing.assert_close(model.pretrained.state_dict()[name], state[name])
    # the same file through a preset file, and a tiny file keeps tiny
    f = tmp_path / "mine.toml"
    f.write_text(f'base = "camvid"\npretrained_backbone = "{tmp_path / "resnet18.pth"}"\n')
    assert resolve("cpu", preset_file=str(f)).backbone == "resnet18"
    _torchvision_file(tmp_path / "tiny.pth", "tiny")
    assert resolve("camvid", {"pretrained_backbone": str(tmp_path / "tiny.pth")}).backbone == "tiny"


@pytest.mark.parametrize("overrides,match", [
    ({"backbone": "resnet50", "pretrained_backbone": "{d}/resnet18.pth"}, "holds a resnet18 but the backbone is 'resnet50'"),
    ({"pretrained_backbone": "{d}/nope.pth"}, "nope.pth.*no such file"),
    ({"pretrained_backbone": "{d}/model.pt"}, "model.pt.*not a torchvision ResNet"),
    ({"pretrained_backbone": "https://example.org/r18.pth"}, "is a URL; name its backbone"),
])
def test_a_pretrained_backbone_that_does_not_fit_is_refused_by_name(tmp_path, overrides, match):
    import torch

    _torchvision_file(tmp_path / "resnet18.pth", "resnet18")
    torch.save({"pretrained.conv1.weight": torch.zeros(1), "head.x": torch.zeros(1)}, tmp_path / "model.pt")
    overrides = {k: v.format(d=tmp_path) if isinstance(v, str) else v for k, v in overrides.items()}
    with pytest.raises(ValueError, match=match):
        resolve("camvid", overrides)


def _full_size_camvid(root, n_train=2, n_val=1):
    """CamVid's layout at its real size (360 x 480, 11 classes + void 11), random pixels."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        lines = []
        for i in range(n):
            name = f"0016E5_{i:05d}.png"
            for folder, array in ((split, rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)),
                                  (f"{split}annot", rng.integers(0, 12, (360, 480), dtype=np.uint8))):
                (root / "CamVid" / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / "CamVid" / folder / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / "CamVid" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_the_camvid_preset_runs_on_full_size_camvid(tmp_path):
    """The preset as built in (crops, scales, class balance, evaluation scale) on 360 x 480 images in
    CamVid's layout, shortened to two iterations: trained, evaluated at full label resolution."""
    import luigi

    from pipeline.tasks import Evaluation

    data = _full_size_camvid(tmp_path / "camvid")
    config = luigi.configuration.get_config()
    config.set("pipeline", "root", str(tmp_path / "art"))
    config.set("pipeline", "progress", "false")
    short = {"iterations": 2, "batch_size": 2, "checkpoint_every": 2, "log_every": 1}
    try:
        task = Evaluation(dataset="camvid", data_root=str(data), preset="camvid", overrides=short, attention="both")
        assert luigi.build([task], local_scheduler=True)
        result = json.loads(Path(task.output().path).read_text())
        record = json.loads(Path(task.requires()["model"].output().path).read_text())
    finally:
        config.set("pipeline", "root", "artifacts")
    assert record["preset"] == {**json.loads(json.dumps(PRESETS["camvid"].as_dict())), **short}
    weights = record["train"]["class_weights"]
    assert (weights is not None) == (PRESETS["camvid"].class_balance > 0)
    assert result["num_images"] == 1 and len(result["per_class_iou"]) == 11
    from pipeline.datasets import read_label

    label = read_label(data / "CamVid" / "valannot" / "0016E5_00000.png")       # (360, 480), void = 11
    assert sum(map(sum, result["confusion"])) == int((label != 11).sum())      # scored at full label resolution


def test_a_preset_file_with_an_unknown_base_is_named(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('base = "cpuu"\n')
    with pytest.raises(ValueError, match=r"preset file '.*mine.toml': base: unknown preset 'cpuu'"):
        resolve("cpu", None, str(f))


def test_a_dataset_without_a_preset_of_its_own_trains_with_a_preset_file_s_base(tmp_path):
    # ADE20K has no preset: "name one with --preset or --preset-file" was said, but a --preset-file
    # with base = "cityscapes" was refused by the same message (the empty --preset was resolved first)
    from pipeline import TrainedModel

    based = tmp_path / "ade.toml"
    based.write_text('base = "cityscapes"\niterations = 5\n')
    task = TrainedModel(dataset="ade20k", preset_file=str(based))
    preset = task.get_preset()
    assert (preset.name, preset.iterations, preset.multi_grid) == ("ade", 5, (4, 8, 16))
    bare = tmp_path / "bare.toml"
    bare.write_text("iterations = 5\n")
    with pytest.raises(ValueError, match=r"preset file '.*bare.toml': base: no base = \"<preset>\" in the file"):
        TrainedModel(dataset="ade20k", preset_file=str(bare))
    with pytest.raises(ValueError, match=r"dataset 'ade20k' has no preset of its own"):
        TrainedModel(dataset="ade20k")
    assert TrainedModel(dataset="synthetic", preset_file=str(bare)).get_preset().batch_size == PRESETS["cpu"].batch_size
