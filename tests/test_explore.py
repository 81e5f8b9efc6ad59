"""The attention explorer (``danet explore``, ``danet.explore``) without a browser.

The page's numbers are checked against ``refimpl``: the PAM rows it carries, decoded as the page
decodes them, equal ``refimpl.position_attention``'s rows of S on the model's own features within
half a quantisation step; its CAM matrix equals ``refimpl.channel_attention``'s; its fused
prediction is the model's argmax. The page refers to nothing outside itself. Bad input is one
line and writes nothing. ``tests/test_explorer_browser.py`` drives the same page in Chromium.
"""

import base64
import io
import json
import re
import tomllib
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

import refimpl
from danet import DANet
from danet.explore import (dequantise_rows, explorer_data, explorer_html, query_grid, query_stride,
                           quantise_rows, render)
from danet.export import state_dict_to_numpy
from danet.attention_maps import feature_cell
from danet.preprocess import normalize
from tests.test_cli import one_line_error, run, scene
from tests.test_network_parity import randomise

ROOT = Path(__file__).resolve().parents[1]
K = 5


def tiny_model(attention="both"):
    torch.manual_seed(0)
    return randomise(DANet(K, "tiny", attention=attention), seed=1, gamma_pam=0.7, beta_cam=0.3).eval()


def pole_scene(H=96, W=128, seed=0, pole_x=61):
    """``scene`` with a 2-pixel-wide red pole from top to bottom: the thin object."""
    img = scene(H, W, seed)
    img[:, pole_x:pole_x + 2] = (235, 30, 30)
    return img


def unpack(text: str, dtype, deflate: bool = False) -> np.ndarray:
    """The inverse of the page's packing: base64 (and deflate) -> a little-endian array."""
    data = base64.b64decode(text)
    return np.frombuffer(zlib.decompress(data) if deflate else data, dtype=np.dtype(dtype).newbyteorder("<"))


def page_data(page: str) -> dict:
    """The data a page carries (its inline JSON)."""
    blob = re.search(r'<script type="application/json" id="danet-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(blob)


def reference_attention(model, image):
    """refimpl's S (N, N) and CAM attention (C, C), float64, on the model's own head inputs."""
    weights = state_dict_to_numpy(model)
    with torch.no_grad():
        A = model.features(normalize(image))
        feat1 = model.head.conv5a(A).double().numpy()                     # (1, C, h, w)
        feat2 = model.head.conv5c(A).double().numpy()                     # (1, C, h, w)
    pam = {k[len("head.sa."):]: v for k, v in weights.items() if k.startswith("head.sa.")}
    _, S = refimpl.position_attention(feat1, pam, return_attention=True)  # (1, N, N)
    _, X = refimpl.channel_attention(feat2, {"gamma": weights["head.sc.gamma"]}, return_attention=True)
    return S[0], X[0], feat1.shape[2:]


@pytest.fixture(scope="module")
def tiny():
    model, image = tiny_model(), pole_scene()
    S, cam, (h, w) = reference_attention(model, image)
    return {"model": model, "image": image, "S": S, "cam": cam, "h": h, "w": w}


# --------------------------------------------------------------------------- rows and quantisation

@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 40)),
              elements=st.floats(0, 1e3, width=32)))
def test_quantised_rows_are_within_half_a_step(rows):
    codes, scale = quantise_rows(rows)
    shown = dequantise_rows(codes, scale)
    bound = scale.astype(np.float64)[:, None] / 510
    assert codes.dtype == np.uint8 and (np.abs(shown - rows) <= bound * (1 + 1e-6) + 1e-30).all()
    assert (codes.max(axis=1)[scale > 0] == 255).all(), "each row's maximum must use the full 8 bits"


@pytest.mark.parametrize("limits,stride", [({}, 1), ({"budget": 60 * 192}, 2), ({"max_bytes": 3000}, None)],
                         ids=["every cell", "stride 2 by numbers", "stride by bytes"])
def test_page_rows_equal_refimpl_rows_within_half_a_step(tiny, limits, stride):
    h, w = tiny["h"], tiny["w"]
    data = explorer_data(tiny["model"], tiny["image"], **limits)
    pam = data["pam"]
    s = pam["stride"]
    assert (pam["qi"], pam["qj"]) == query_grid(h, w, s)
    if stride is not None:
        assert s == stride
    else:                                                                      # the bytes decided it
        assert s > 1 and len(pam["codes"]) <= limits["max_bytes"]
    codes = unpack(pam["codes"], np.uint8, deflate=True).reshape(-1, h * w)     # (Q, N)
    scale = unpack(pam["scales"], np.float32)                                  # (Q,)
    cells = [i * w + j for i in pam["qi"] for j in pam["qj"]]
    assert len(codes) == len(cells) == len(pam["qi"]) * len(pam["qj"])
    ref = tiny["S"][cells]                                                     # (Q, N)
    err = np.abs(dequantise_rows(codes, scale) - ref)
    step = ref.max(axis=1, keepdims=True) / 255
    assert (err <= step * (0.5 + 1e-3)).all(), f"worst error {float((err / step).max()):.4f} steps"
    assert pam["gamma"] == pytest.approx(0.7)


def test_cam_matrix_and_predictions_are_the_models(tiny):
    model, image = tiny["model"], tiny["image"]
    data = explorer_data(model, image)
    C = data["cam"]["C"]
    codes = unpack(data["cam"]["codes"], np.uint8, deflate=True).reshape(C, C)
    shown = dequantise_rows(codes, unpack(data["cam"]["scales"], np.float32))
    assert (np.abs(shown - tiny["cam"]) <= tiny["cam"].max(1, keepdims=True) / 255 * (0.5 + 1e-3)).all()
    assert data["cam"]["beta"] == pytest.approx(0.3)
    with torch.no_grad():
        logits = model(normalize(image))
    for name, out in zip(("fused", "pam", "cam"), logits):
        uri = data["branches"][name]["png"]
        label = np.array(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
        assert label.shape == image.shape[:2]
        np.testing.assert_array_equal(label, out.argmax(1)[0].numpy(), err_msg=f"{name} branch")
    legend = data["branches"]["fused"]["legend"]
    assert sum(pct for _, _, pct in legend) == pytest.approx(100, abs=0.1)
    H, W, h, w = *image.shape[:2], tiny["h"], tiny["w"]
    rows, cols = unpack(data["rowmap"], np.uint16), unpack(data["colmap"], np.uint16)
    for y, x in ((0, 0), (50, 61), (H - 1, W - 1), (37, 90)):
        assert (rows[y], cols[x]) == feature_cell(y, x, H, W, h, w, model.align_corners)


@pytest.mark.parametrize("attention,branch", [("pam", "pam"), ("cam", "cam"), ("none", "fcn")])
def test_models_without_a_module(tiny, attention, branch):
    data = explorer_data(tiny_model(attention), tiny["image"][:40, :48])
    assert list(data["branches"]) == [branch]
    assert (data["pam"] is None) == (attention in ("cam", "none"))
    assert (data["cam"] is None) == (attention in ("pam", "none"))


def test_query_stride_fits_the_budget():
    assert query_stride(64, 64, 6 * 2**20) == 2                        # 512×512 at output stride 8
    s = query_stride(128, 256, 6 * 2**20)                              # 1024×2048
    assert -(-128 // s) * -(-256 // s) * 128 * 256 <= 6 * 2**20 < -(-128 // (s - 1)) * -(-256 // (s - 1)) * 128 * 256
    assert query_stride(3, 4, 1) == 4                                  # never beyond the grid


# --------------------------------------------------------------------------- the page

class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href", "action", "poster", "data")]


def test_page_is_self_contained(tiny):
    page = explorer_html(tiny["model"], tiny["image"], title="pole.png", source="tiny.pt")
    parser = _Refs()
    parser.feed(page)
    assert parser.refs == [], f"the page refers to outside resources: {parser.refs}"
    assert "link" not in parser.tags and "iframe" not in parser.tags
    for pattern in (r"https?:", r"@import", r"url\(", r"<script[^>]+src", r"fetch\(", r"XMLHttpRequest"):
        assert not re.search(pattern, page, re.I), f"{pattern!r} in the page"
    uris = re.findall(r'"(data:[^"]+)"', page)
    assert uris and all(u.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for u in uris)
    assert "__DANET" not in page
    data = page_data(page)
    assert "tiny.pt" in data["about"] and "96×128" in data["about"] and "N = 192" in data["about"]


def test_data_cannot_close_its_script_tag():
    page = render({"title": "</script><script>alert(1)</script>", "about": "x"})
    assert page.count("</script>") == open(ROOT / "danet/templates/explorer.html").read().count("</script>")


def test_template_is_package_data():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = cfg["package-data"]["danet"]
    files = sorted((ROOT / "danet").glob("templates/*"))
    assert files and all(any(f.match(g) for g in globs) for f in files)


# --------------------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny):
    d = tmp_path_factory.mktemp("explore")
    Image.fromarray(pole_scene(40, 56)).save(d / "street.png")
    Image.fromarray(scene(48, 40, 1)).save(d / "room.jpg", quality=95)
    (d / "notes.png").write_text("not an image")
    torch.save({"model": tiny["model"].state_dict(), "settings": tiny["model"].settings}, d / "tiny.pt")
    bad = dict(tiny["model"].state_dict())
    bad["head.sa.query_conv.weight"] = torch.zeros(8, 32, 1, 1)
    torch.save(bad, d / "misshapen.pt")
    (d / "sub").mkdir()
    Image.fromarray(scene(8, 8, 3)).save(d / "sub" / "street.png")
    return d


def test_explore_writes_one_page_per_image(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("explore", files / "street.png", files / "room.jpg", "--checkpoint", files / "tiny.pt",
               "--out", out, "--classes", "5") == 0
    assert sorted(p.name for p in out.iterdir()) == ["room_explorer.html", "street_explorer.html"]
    about = page_data((out / "room_explorer.html").read_text())["about"]
    assert "room.jpg" in about and "tiny.pt" in about and "48×40" in about
    assert "explore" in capsys.readouterr().out


BAD = [
    ("missing image", ["{d}/gone.png"], [], 1, ["gone.png", "no such file"]),
    ("unreadable image", ["{d}/notes.png"], [], 1, ["notes.png", "not a readable image"]),
    ("other architecture", ["{d}/street.png"], ["--checkpoint", "{d}/misshapen.pt"], 1,
     ["misshapen.pt", "head.sa.query_conv.weight"]),
    ("class count", ["{d}/street.png"], ["--classes", "7"], 2, ["7", "5"]),
    ("class set size", ["{d}/street.png"], ["--classes", "cityscapes"], 2, ["cityscapes", "19", "5"]),
    ("same stem", ["{d}/street.png", "{d}/sub/street.png"], [], 2, ["street"]),
    ("second image bad", ["{d}/street.png", "{d}/notes.png"], [], 1, ["notes.png"]),
]


@pytest.mark.parametrize("case,images,extra,status,names", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(files, tmp_path, capsys, case, images, extra, status, names):
    out = tmp_path / "out"
    out.mkdir()
    argv = ["explore", *[i.format(d=files) for i in images], "--checkpoint", f"{files}/tiny.pt",
            *[a.format(d=files) for a in extra], "--out", out]
    assert run(*argv) == status
    one_line_error(capsys, *names)
    assert list(out.iterdir()) == [], "nothing may be written on bad input"


def test_ci_requires_the_browser_test():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "apt-get install" in ci and "chromium" in ci
    assert ci.index("export DANET_REQUIRE_BROWSER=1") < ci.index("make test")
