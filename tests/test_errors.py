"""Bad input to the NumPy reference gets a clear error naming the thing that was wrong."""

import numpy as np
import pytest
import torch

import refimpl
from danet import DANetHead, PositionAttention, export_npz, state_dict_to_numpy
from refimpl import WeightError, load_npz
from refimpl.head import head_weight_shapes


@pytest.fixture
def pam_w():
    return state_dict_to_numpy(PositionAttention(16).double())


def test_wrong_rank(pam_w):
    with pytest.raises(ValueError, match=r"position_attention: x must have shape \(B, C, H, W\), got 3 dimensions"):
        refimpl.position_attention(np.zeros((16, 4, 4)), pam_w)
    with pytest.raises(ValueError, match="channel_attention: x must have shape"):
        refimpl.channel_attention(np.zeros((2, 16)), {"gamma": np.zeros(1)})


def test_integer_input_refused(pam_w):
    with pytest.raises(TypeError, match="floating-point numpy array, got ndarray of dtype int64"):
        refimpl.position_attention(np.zeros((1, 16, 2, 2), dtype=np.int64), pam_w)
    with pytest.raises(TypeError, match="floating-point"):
        refimpl.softmax(np.arange(3))


def test_wrong_channel_count(pam_w):
    with pytest.raises(WeightError, match=r"array 'value_conv.weight' has shape \(16, 16, 1, 1\), expected \(32, 32, 1, 1\)"):
        refimpl.position_attention(np.zeros((1, 32, 2, 2)), pam_w)


def test_missing_and_extra_weights(pam_w):
    w = dict(pam_w)
    del w["key_conv.bias"]
    w["bogus"] = np.zeros(3)
    with pytest.raises(WeightError) as err:
        refimpl.position_attention(np.zeros((1, 16, 2, 2)), w)
    assert "missing array 'key_conv.bias'" in str(err.value) and "unexpected array 'bogus'" in str(err.value)


@pytest.mark.parametrize("gamma", [np.nan, np.inf, -np.inf])
def test_non_finite_gamma(pam_w, gamma):
    with pytest.raises(ValueError, match="'gamma' must be finite"):
        refimpl.position_attention(np.zeros((1, 16, 2, 2)), {**pam_w, "gamma": np.array([gamma])})
    with pytest.raises(ValueError, match="'gamma' must be finite"):
        refimpl.channel_attention(np.zeros((1, 16, 2, 2)), {"gamma": np.array([gamma])})


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True])
def test_bad_chunk_size(pam_w, chunk):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        refimpl.position_attention(np.zeros((1, 16, 2, 2)), pam_w, chunk_size=chunk)


def test_chunked_attention_cannot_be_returned(pam_w):
    with pytest.raises(ValueError, match="call without chunk_size"):
        refimpl.position_attention(np.zeros((1, 16, 2, 2)), pam_w, chunk_size=2, return_attention=True)


def test_unknown_cam_variant():
    with pytest.raises(ValueError, match="variant must be one of"):
        refimpl.channel_attention(np.zeros((1, 8, 2, 2)), {"gamma": np.zeros(1)}, variant="Official")


def test_head_weights_that_do_not_match():
    w = state_dict_to_numpy(DANetHead(64, 3).double())
    with pytest.raises(WeightError, match=r"'conv5a.0.weight' has shape \(16, 64, 3, 3\), expected \(32, 128, 3, 3\)"):
        refimpl.danet_head(np.zeros((1, 128, 3, 3)), w)
    del w["conv8.1.bias"]
    with pytest.raises(WeightError, match="missing array 'conv8.1.bias'"):
        refimpl.danet_head(np.zeros((1, 64, 3, 3)), w)


def test_npz_roundtrip_and_shape_check(tmp_path):
    head = DANetHead(64, 3)
    path = export_npz(head, tmp_path / "sub" / "head.npz")
    w = load_npz(path, expected=head_weight_shapes(64, 3))
    torch.testing.assert_close(torch.from_numpy(w["conv6.1.weight"]), head.conv6[1].weight.detach())
    with pytest.raises(WeightError, match=r"head.npz: array 'conv6.1.weight' has shape \(3, 16, 1, 1\), expected \(5, 16, 1, 1\)"):
        load_npz(path, expected=head_weight_shapes(64, 5))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["head.npz"]  # no temporary left behind


def test_npz_refuses_pickles_and_corrupt_files(tmp_path):
    np.savez(tmp_path / "obj.npz", w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(WeightError, match="obj.npz' holds pickled Python objects"):
        load_npz(tmp_path / "obj.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(WeightError, match="bad.npz' is not a readable .npz"):
        load_npz(tmp_path / "bad.npz")
    good = tmp_path / "good.npz"
    np.savez(good, a=np.zeros(1000))
    (tmp_path / "trunc.npz").write_bytes(good.read_bytes()[:200])
    with pytest.raises(WeightError, match="trunc.npz"):
        load_npz(tmp_path / "trunc.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz' does not exist"):
        load_npz(tmp_path / "missing.npz")
