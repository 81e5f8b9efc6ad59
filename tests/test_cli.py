"""The ``danet`` command: predict, check and export on small checkpoints the tests build themselves.

A tiny DANet with γ, β ≠ 0 and non-trivial BatchNorm statistics is saved in this project's format;
a ResNet-50 DANet with mmsegmentation's deep stem and ``align_corners=False`` is re-keyed to the
mmseg layout (``to_mmseg_state_dict``) with Cityscapes class names in its meta. Images are
40×56 and 48×40. Commands run in-process through ``danet.cli.main`` and once as a subprocess.
"""

import copy
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import refimpl
from danet import DANet, to_mmseg_state_dict
from danet.classes import CLASS_NAMES, generic_palette, palette
from danet.cli import main
from danet.attention_maps import feature_cell, pam_rows, region_queries
from danet.preprocess import normalize
from tests.test_network_parity import randomise

ROOT = Path(__file__).resolve().parents[1]
K = 5


def scene(H, W, seed):
    """A smooth photo-like uint8 image: colour gradients and a bright disc."""
    ys, xs = np.mgrid[0:H, 0:W] / max(H, W)
    rng = np.random.default_rng(seed)
    img = np.stack([np.sin(3 * xs + rng.uniform(0, 3)), np.cos(4 * ys), xs * ys], -1) * 0.4 + 0.5
    img[(ys - 0.4) ** 2 + (xs - 0.5) ** 2 < 0.03] = (0.9, 0.9, 0.2)
    return (img * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    Image.fromarray(scene(40, 56, 0)).save(d / "street.png")
    Image.fromarray(scene(48, 40, 1)).save(d / "room.jpg", quality=95)
    (d / "notes.png").write_text("not an image")
    torch.manual_seed(0)
    tiny = randomise(DANet(K, "tiny"), seed=1, gamma_pam=0.7, beta_cam=0.3)
    torch.save({"model": tiny.state_dict(), "settings": tiny.settings}, d / "tiny.pt")   # as pipeline.train does
    big = randomise(DANet(19, "resnet50", stem="deep", stem_width=32, align_corners=False), seed=2)
    torch.save({"meta": {"CLASSES": list(CLASS_NAMES["cityscapes"])}, "state_dict": to_mmseg_state_dict(big.state_dict())},
               d / "mmseg_r50.pth")
    torch.save({"fc.weight": torch.zeros(3, 4)}, d / "linear.pt")
    bad = dict(tiny.state_dict())
    bad["head.sa.query_conv.weight"] = torch.zeros(8, 32, 1, 1)
    torch.save(bad, d / "misshapen.pt")
    return {"dir": d, "tiny": tiny, "big": big}


def run(*argv):
    return main([str(a) for a in argv])


def one_line_error(capsys, *names):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    for name in names:
        assert str(name) in err, f"{name!r} not named in: {err}"
    return err


def decode(rgb: np.ndarray, pal: np.ndarray) -> np.ndarray:
    """A colour segmentation PNG back to class indices (every pixel must be a palette colour)."""
    match = (rgb[:, :, None, :] == pal[None, None]).all(-1)             # (H, W, K)
    assert match.any(-1).all(), "a pixel of the segmentation PNG is not a palette colour"
    return match.argmax(-1)


# --------------------------------------------------------------------------- predict

def test_predict_writes_every_output(files, tmp_path, capsys):
    d, out = files["dir"], tmp_path / "out"
    assert run("predict", d / "street.png", d / "room.jpg", "--checkpoint", d / "tiny.pt", "--out", out) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"danet predict: 2 image(s) -> {out} (predictions.json)"
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["classes"] == "generic" and summary["num_classes"] == K and summary["format"] == "project"
    assert [Path(r["file"]).name for r in summary["images"]] == ["street.png", "room.jpg"]
    for record, (H, W) in zip(summary["images"], [(40, 56), (48, 40)]):
        assert record["size"] == [H, W]
        assert sum(record["histogram"].values()) == H * W
        labels = decode(np.array(Image.open(record["outputs"]["segmentation"])), generic_palette(K))
        assert record["queries"] == [list(q) for q in region_queries(labels)]     # on predicted regions
        assert record["gamma_pam"] == pytest.approx(0.7) and record["beta_cam"] == pytest.approx(0.3)
        assert set(record["outputs"]) == {"segmentation", "overlay", "attention"}
        for kind, path in record["outputs"].items():
            with Image.open(path) as im:
                im.verify()
            assert Path(path).name == f"{Path(record['file']).stem}_{kind}.png"
        with Image.open(record["outputs"]["segmentation"]) as im:
            assert im.size == (W, H) and im.mode == "RGB"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["predictions.json"] + [f"{s}_{k}.png" for s in ("street", "room") for k in ("segmentation", "overlay", "attention")])


def test_default_queries_sit_on_the_large_predicted_regions():
    label = np.zeros((20, 30), np.int64)
    label[:, 20:] = 1                                                  # 1/3 of the image
    label[2:18, 2:18] = 2                                              # a square, holding class 3's hole
    label[8:12, 8:12] = 3                                              # 16 px: under 5 %, no query
    queries = region_queries(label)
    assert [label[y, x] for y, x in queries] == [2, 1, 0]              # largest first, each on its class
    ring = np.zeros((21, 21), np.int64)
    ring[3:18, 3:18] = 1
    ring[6:15, 6:15] = 0                                               # class 1 is a ring: its centroid is a hole
    assert all(ring[y, x] == c for (y, x), c in zip(region_queries(ring), (0, 1)))
    assert len(region_queries(np.arange(600).reshape(20, 30) % 40)) == 1   # no large class: the largest still gets one


def test_project_checkpoint_names_classes_from_its_params_json(files, tmp_path, capsys):
    """A pipeline model.pt has a params.json beside it: its class names (and the built-in palette) are used,
    and an untrained one (γ = β = 0) is warned about in predict and check."""
    d, run_dir = files["dir"], tmp_path / "run"
    run_dir.mkdir()
    torch.save(DANet(4, "tiny").state_dict(), run_dir / "model.pt")
    names = list(CLASS_NAMES["synthetic"])
    (run_dir / "params.json").write_text(json.dumps({"num_classes": 4, "class_names": names}))
    assert run("predict", d / "street.png", "--checkpoint", run_dir / "model.pt", "--out", tmp_path / "p") == 0
    summary = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert summary["class_names"] == names and summary["classes"] == "synthetic"
    decode(np.array(Image.open(tmp_path / "p" / "street_segmentation.png")), palette("synthetic"))
    assert "danet: warning: γ (PAM) and β (CAM) are both 0" in capsys.readouterr().err
    run("check", d / "street.png", "--checkpoint", run_dir / "model.pt", "--dtype", "float32")
    assert "untrained" in capsys.readouterr().err
    assert run("predict", d / "street.png", "--checkpoint", d / "tiny.pt", "--out", tmp_path / "q") == 0
    assert "untrained" not in capsys.readouterr().err                  # γ, β ≠ 0: nothing to warn about


def test_segmentation_png_is_the_models_argmax(files, tmp_path):
    """The colour map decodes to argmax of the model's fused output on the ImageNet-normalised image."""
    d = files["dir"]
    assert run("predict", d / "street.png", "--checkpoint", d / "tiny.pt", "--out", tmp_path, "--classes", K) == 0
    labels = decode(np.array(Image.open(tmp_path / "street_segmentation.png")), generic_palette(K))
    image = np.array(Image.open(d / "street.png"))
    x = (image / 255.0 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)            # (H, W, 3)
    with torch.no_grad():
        logits = files["tiny"](torch.from_numpy(x.transpose(2, 0, 1)[None]).float())[0]
    expected = logits.argmax(1)[0].numpy()
    assert (labels == expected).mean() > 0.999                         # ties at float rounding aside
    assert len(np.unique(labels)) > 1


def test_predict_sliding_flip_and_queries(files, tmp_path):
    d = files["dir"]
    argv = ["predict", d / "street.png", "--checkpoint", d / "tiny.pt", "--out", tmp_path,
            "--sliding", "32,16", "--flip", "--query", "0,0", "39,55"]
    assert run(*argv) == 0
    record = json.loads((tmp_path / "predictions.json").read_text())["images"][0]
    assert record["queries"] == [[0, 0], [39, 55]]
    assert record["query_cells"] == [[0, 0], [4, 6]]                   # corners of the 5×7 feature grid
    summary = json.loads((tmp_path / "predictions.json").read_text())
    assert summary["sliding"] == [32, 16] and summary["flip"] is True
    sliding = decode(np.array(Image.open(tmp_path / "street_segmentation.png")), generic_palette(K))
    run("predict", d / "street.png", "--checkpoint", d / "tiny.pt", "--out", tmp_path / "whole")
    whole = decode(np.array(Image.open(tmp_path / "whole" / "street_segmentation.png")), generic_palette(K))
    assert (sliding != whole).any(), "32×32 windows on a 40×56 image must change some pixels"


def test_pam_rows_are_rows_of_the_explicit_attention(files):
    """q rows computed from the convs equal the rows of the N×N matrix S; the cells follow the resize grid."""
    model = files["tiny"]
    with torch.no_grad():
        A = model.features(normalize(scene(40, 56, 0)))               # (1, 128, 5, 7)
        S = model.head.sa.attention(model.head.conv5a(A))[0]          # (N, N)
    cells = [(0, 0), (2, 3), (4, 6), (1, 5)]
    rows = pam_rows(model, A, cells)                                   # (4, 5, 7)
    for row, (i, j) in zip(rows, cells):
        torch.testing.assert_close(row.reshape(-1), S[i * 7 + j], rtol=1e-5, atol=1e-7)
    assert feature_cell(39, 55, 40, 56, 5, 7, True) == (4, 6)
    assert feature_cell(20, 28, 40, 56, 5, 7, True) == (2, 3)
    assert feature_cell(0, 0, 40, 56, 5, 7, False) == (0, 0)
    assert feature_cell(39, 55, 40, 56, 5, 7, False) == (4, 6)


def test_mmseg_checkpoint_classes_from_meta_and_check(files, tmp_path):
    """An mmseg-layout ResNet-50 (deep stem 32, align_corners False): Cityscapes names from its meta,
    the official Cityscapes colours, and NumPy = torch to 1e-10 with the architecture passed through."""
    d = files["dir"]
    assert run("predict", d / "street.png", "--checkpoint", d / "mmseg_r50.pth", "--out", tmp_path / "p") == 0
    summary = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert summary["format"] == "mmseg" and summary["classes"] == "cityscapes" and summary["backbone"] == "resnet50"
    assert set(summary["images"][0]["histogram"]) <= set(summary["class_names"])
    decode(np.array(Image.open(tmp_path / "p" / "street_segmentation.png")), palette("cityscapes"))
    assert run("check", d / "street.png", "--checkpoint", d / "mmseg_r50.pth", "--json", tmp_path / "c.json") == 0
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["overall_max_rel_error"] <= 1e-10 and result["format"] == "mmseg"


# --------------------------------------------------------------------------- check, export

@pytest.mark.parametrize("dtype,bar", [("float64", 1e-10), ("float32", 1e-4)])
def test_check_numpy_against_torch(files, tmp_path, capsys, dtype, bar):
    d = files["dir"]
    assert run("check", d / "street.png", "--checkpoint", d / "tiny.pt", "--dtype", dtype,
               "--json", tmp_path / "check.json") == 0
    result = json.loads((tmp_path / "check.json").read_text())
    assert 0 < result["overall_max_rel_error"] <= bar
    assert result["overall_max_rel_error"] == max(result["stages"].values())
    assert list(result["stages"])[:3] == ["stem", "maxpool", "layer1.0"]
    assert {"sa_feat", "sc_feat", "feat_sum", "fused", "pam", "cam"} <= set(result["stages"])
    assert set(result["seconds"]) == {"numpy", "torch"} and result["peak_rss_mib"] > 0
    table = capsys.readouterr().out
    assert "sa_feat" in table and "overall" in table and "within" in table
    assert table.strip().splitlines()[-1] == f"danet check: result -> {tmp_path / 'check.json'}"


def test_check_fails_when_the_reference_disagrees(files, tmp_path, monkeypatch, capsys):
    """A perturbed NumPy weight makes check exit 3 and name the stage where it diverged."""
    import danet.export

    real = danet.export.state_dict_to_numpy

    def perturbed(module, dtype=None):
        w = real(module, dtype)
        w["pretrained.layer3.0.bn2.running_var"] = w["pretrained.layer3.0.bn2.running_var"] + 1e-3
        return w

    monkeypatch.setattr(danet.export, "state_dict_to_numpy", perturbed)
    d = files["dir"]
    assert run("check", d / "street.png", "--checkpoint", d / "tiny.pt", "--json", tmp_path / "c.json") == 3
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["first_stage_over_1e-10"] == "layer3.0" and not result["passed"]
    assert "ABOVE" in capsys.readouterr().out


def test_export_is_what_refimpl_runs(files, tmp_path, capsys):
    d = files["dir"]
    assert run("export", "--checkpoint", d / "tiny.pt", "--out", tmp_path / "w.npz", "--dtype", "float64") == 0
    assert capsys.readouterr().out.strip().endswith(f"-> {tmp_path / 'w.npz'}")
    weights = dict(np.load(tmp_path / "w.npz"))
    assert weights["head.sa.gamma"].dtype == np.float64 and weights["head.sa.gamma"][0] == pytest.approx(0.7)
    x = normalize(scene(40, 56, 0), torch.float64)
    with torch.no_grad():
        expected = copy.deepcopy(files["tiny"]).double()(x)[0].numpy()
    fused, _, _ = refimpl.danet_forward(x.numpy(), weights)
    assert np.abs(fused - expected).max() <= 1e-10 * np.abs(expected).max()
    assert run("export", "--checkpoint", d / "tiny.pt", "--out", tmp_path / "w32.npz") == 0
    assert np.load(tmp_path / "w32.npz")["head.conv8.1.weight"].dtype == np.float32


# --------------------------------------------------------------------------- bad input

BAD = [  # (id, argv after the command, exit status, what the message must name)
    ("missing image", ["predict", "{d}/street.png", "{d}/gone.png", "--checkpoint", "{d}/tiny.pt"], 1, ["gone.png"]),
    ("unreadable image", ["predict", "{d}/notes.png", "--checkpoint", "{d}/tiny.pt"], 1, ["notes.png"]),
    ("missing checkpoint", ["predict", "{d}/street.png", "--checkpoint", "{d}/none.pt"], 1, ["none.pt"]),
    ("unknown format", ["predict", "{d}/street.png", "--checkpoint", "{d}/linear.pt"], 1, ["linear.pt", "format"]),
    ("bad format name", ["predict", "{d}/street.png", "--checkpoint", "{d}/tiny.pt", "--format", "caffe"], 2,
     ["--format", "caffe"]),
    ("wrong format", ["predict", "{d}/street.png", "--checkpoint", "{d}/tiny.pt", "--format", "mmseg"], 1,
     ["tiny.pt", "mmseg"]),
    ("other architecture", ["predict", "{d}/street.png", "--checkpoint", "{d}/misshapen.pt"], 1,
     ["misshapen.pt", "head.sa.query_conv.weight"]),
    ("class set size", ["predict", "{d}/street.png", "--checkpoint", "{d}/tiny.pt", "--classes", "cityscapes"], 2,
     ["cityscapes", "19", "5"]),
    ("class count", ["predict", "{d}/street.png", "--checkpoint", "{d}/tiny.pt", "--classes", "7"], 2, ["7", "5"]),
    ("unknown class set", ["predict", "{d}/street.png", "--checkpoint", "{d}/tiny.pt", "--classes", "coco"], 2,
     ["coco"]),
    ("query outside", ["predict", "{d}/street.png", "{d}/room.jpg", "--checkpoint", "{d}/tiny.pt", "--query", "10,45"],
     2, ["10,45", "room.jpg"]),
    ("query syntax", ["predict", "{d}/street.png", "--checkpoint", "{d}/tiny.pt", "--query", "4"], 2, ["--query"]),
    ("sliding stride", ["predict", "{d}/street.png", "--checkpoint", "{d}/tiny.pt", "--sliding", "16,32"], 2,
     ["--sliding", "16,32"]),
    ("sliding syntax", ["predict", "{d}/street.png", "--checkpoint", "{d}/tiny.pt", "--sliding", "big"], 2,
     ["--sliding", "big"]),
    ("sliding zero", ["predict", "{d}/street.png", "--checkpoint", "{d}/tiny.pt", "--sliding", "0,0"], 2, ["--sliding"]),
    ("same stem", ["predict", "{d}/street.png", "{d}/sub/street.png", "--checkpoint", "{d}/tiny.pt"], 2, ["street"]),
    ("negative max pixels", ["predict", "{d}/street.png", "--checkpoint", "{d}/tiny.pt", "--max-pixels", "-5"], 2,
     ["--max-pixels", "-5", ">= 0"]),
    ("check missing image", ["check", "{d}/gone.png", "--checkpoint", "{d}/tiny.pt"], 1, ["gone.png"]),
    ("export without --out", ["export", "--checkpoint", "{d}/tiny.pt"], 2, ["--out"]),
    ("export not npz", ["export", "--checkpoint", "{d}/tiny.pt", "--out", "{d}/w.txt"], 2, ["w.txt", ".npz"]),
    ("no command", [], 2, ["command", "predict, explore, check or export"]),
]


@pytest.mark.parametrize("case,argv,status,names", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(files, tmp_path, capsys, case, argv, status, names):
    d = files["dir"]
    (d / "sub").mkdir(exist_ok=True)
    Image.fromarray(scene(8, 8, 3)).save(d / "sub" / "street.png")
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(d=d) for a in argv] + (["--out", out] if argv and argv[0] == "predict" else [])
    assert run(*argv) == status
    one_line_error(capsys, *names)
    assert list(out.iterdir()) == [], "nothing may be written on bad input"


OUTPUTS = [  # (command and inputs, the output flag, what it must be)
    (["predict", "{d}/street.png"], "--out", "folder"),
    (["explore", "{d}/street.png"], "--out", "folder"),
    (["check", "{d}/street.png"], "--json", "file"),
    (["export"], "--out", "file"),
]


@pytest.mark.parametrize("argv,flag,kind", OUTPUTS, ids=[o[0][0] for o in OUTPUTS])
def test_a_bad_output_path_is_refused_before_any_work(files, tmp_path, capsys, monkeypatch, argv, flag, kind):
    """A file where a folder goes (or the reverse), a path under a file, or an unwritable place: one
    line naming the flag, exit 2, and nothing created (as root, permissions are simulated)."""
    d = files["dir"]
    argv = [a.format(d=d) for a in argv] + ["--checkpoint", d / "tiny.pt", flag]
    a_file, a_folder = tmp_path / "taken.npz", tmp_path / "folder.npz"
    a_file.write_text("x")
    a_folder.mkdir()
    wrong = a_file if kind == "folder" else a_folder
    before = sorted(tmp_path.rglob("*"))
    assert run(*argv, wrong) == 2
    one_line_error(capsys, flag, wrong, f"expected a {kind}")
    assert run(*argv, a_file / "sub" / "w.npz") == 2
    one_line_error(capsys, flag, f"'{a_file}' is a file")
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(tmp_path))
    assert run(*argv, tmp_path / "new" / "w.npz") == 2
    one_line_error(capsys, flag, f"cannot write in '{tmp_path}'")
    assert sorted(tmp_path.rglob("*")) == before, "nothing may be written on a bad output path"


# --------------------------------------------------------------------------- as installed

def test_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"danet": "danet.cli:main"}


def test_python_m_danet_as_a_subprocess(files, tmp_path):
    d = files["dir"]

    def danet(*args):
        return subprocess.run([sys.executable, "-m", "danet", *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})

    res = danet("--help")
    assert res.returncode == 0 and all(c in res.stdout for c in ("predict", "check", "export"))
    res = danet("predict", d / "room.jpg", "--checkpoint", d / "tiny.pt", "--out", tmp_path, "--query", "10,10")
    assert res.returncode == 0, res.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"predictions.json", "room_segmentation.png", "room_overlay.png",
                                                    "room_attention.png"}
    res = danet("predict", d / "gone.png", "--checkpoint", d / "tiny.pt", "--out", tmp_path / "none")
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [f"danet: error: image '{d}/gone.png': no such file"]
    assert not (tmp_path / "none").exists()
