"""NumPy reference vs PyTorch: PAM, CAM (both variants) and the whole head, with γ ≠ 0.

float64 must agree to 1e-10 (normwise relative); float32 separately, loosely. Intermediates are
compared in computation order so a failure names the first step that diverged.
"""

import numpy as np
import pytest
import torch

import refimpl
from danet import ChannelAttention, DANetHead, PositionAttention, state_dict_to_numpy
from tests.conftest import assert_named_close, rel_err

SHAPES = [(1, 16, 4, 4), (2, 32, 5, 7), (3, 16, 1, 9), (2, 64, 6, 3)]  # incl. non-square, B > 1


def _randomise(module: torch.nn.Module, seed: int, gamma: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.3 if p.dim() > 1 else 0.5))
            if name.endswith("gamma"):
                p.fill_(gamma)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
    return module.eval()


@pytest.mark.parametrize("shape", SHAPES)
def test_pam_float64_matches_torch_by_step(shape):
    pam = _randomise(PositionAttention(shape[1]).double(), seed=1)
    x = np.random.default_rng(2).standard_normal(shape)
    with torch.no_grad():
        out_t, mids_t = pam.forward_with_intermediates(torch.from_numpy(x))
    out, mids = refimpl.position_attention(x, state_dict_to_numpy(pam), return_intermediates=True)
    assert_named_close(mids, mids_t, 1e-10, order=["B", "C", "D", "energy", "S", "E"])
    assert rel_err(out, out_t.numpy()) <= 1e-10
    assert out.dtype == np.float64


@pytest.mark.parametrize("chunk", [None, 1, 7])
@pytest.mark.parametrize("shape", SHAPES)
def test_blocked_pam_float64_matches_torch(shape, chunk):
    """The default NumPy path (query blocks, normalised after D·Pᵀ) against torch's explicit PAM."""
    pam = _randomise(PositionAttention(shape[1]).double(), seed=5)
    x = np.random.default_rng(6).standard_normal(shape)
    with torch.no_grad():
        out_t = pam(torch.from_numpy(x)).numpy()
    out = refimpl.position_attention(x, state_dict_to_numpy(pam), chunk_size=chunk)
    assert rel_err(out, out_t) <= 1e-10


@pytest.mark.parametrize("variant", ["official", "paper"])
@pytest.mark.parametrize("shape", SHAPES)
def test_cam_float64_matches_torch_by_step(shape, variant):
    cam = _randomise(ChannelAttention(variant).double(), seed=3, gamma=-0.4)
    x = np.random.default_rng(4).standard_normal(shape) * 0.3
    with torch.no_grad():
        out_t, mids_t = cam.forward_with_intermediates(torch.from_numpy(x))
    out, mids = refimpl.channel_attention(x, state_dict_to_numpy(cam), variant=variant, return_intermediates=True)
    assert_named_close(mids, mids_t, 1e-10, order=["X", "attention", "Y"])
    assert rel_err(out, out_t.numpy()) <= 1e-10


def _head_intermediates(head: DANetHead, x: torch.Tensor) -> dict:
    """The torch head's named feature maps, matching refimpl.danet_head's names."""
    mids = {}
    mids["feat1"] = head.conv5a(x)
    mids["sa_feat"] = head.sa(mids["feat1"])
    mids["sa_conv"] = head.conv51(mids["sa_feat"])
    mids["feat2"] = head.conv5c(x)
    mids["sc_feat"] = head.sc(mids["feat2"])
    mids["sc_conv"] = head.conv52(mids["sc_feat"])
    mids["feat_sum"] = mids["sa_conv"] + mids["sc_conv"]
    return mids


@pytest.mark.parametrize("cam_variant", ["official", "paper"])
@pytest.mark.parametrize("shape,classes", [((1, 64, 5, 5), 3), ((2, 128, 4, 6), 7)])
def test_head_float64_matches_torch_eval(shape, classes, cam_variant):
    head = _randomise(DANetHead(shape[1], classes, cam_variant=cam_variant).double(), seed=5)
    with torch.no_grad():
        head.sc.gamma.fill_(0.02)  # CAM energies grow with C·N; keep β·Y on the scale of A
    x = np.random.default_rng(6).standard_normal(shape)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        fused_t, pam_t, cam_t = head(xt)
        mids_t = _head_intermediates(head, xt)
    fused, pam, cam, mids = refimpl.danet_head(x, state_dict_to_numpy(head), cam_variant=cam_variant,
                                               return_intermediates=True)
    assert_named_close(mids, mids_t, 1e-10, order=list(mids_t))
    for name, a, b in [("fused", fused, fused_t), ("pam", pam, pam_t), ("cam", cam, cam_t)]:
        assert rel_err(a, b.numpy()) <= 1e-10, f"{name} logits differ"
        assert a.shape == (shape[0], classes, shape[2], shape[3])


def test_float32_parity_loose():
    """float32 on both sides: same computation, float32 rounding; loose tolerance."""
    pam = _randomise(PositionAttention(64), seed=7)
    cam = _randomise(ChannelAttention(), seed=8, gamma=0.3)
    head = _randomise(DANetHead(64, 5), seed=9)
    x = np.random.default_rng(10).standard_normal((2, 64, 6, 5)).astype(np.float32)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        pam_t, cam_t, head_t = pam(xt).numpy(), cam(xt * 0.2).numpy(), head(xt)[0].numpy()
    pam_np = refimpl.position_attention(x, state_dict_to_numpy(pam))
    cam_np = refimpl.channel_attention(x * np.float32(0.2), state_dict_to_numpy(cam))
    head_np = refimpl.danet_head(x, state_dict_to_numpy(head))[0]
    for name, a, b in [("pam", pam_np, pam_t), ("cam", cam_np, cam_t), ("head", head_np, head_t)]:
        assert a.dtype == np.float32, name
        assert rel_err(a, b) <= 1e-4, f"{name}: {rel_err(a, b):.2e}"


def test_parity_check_can_fail():
    """The comparison is sensitive: a small change in one weight is caught and named."""
    pam = _randomise(PositionAttention(16).double(), seed=11)
    x = np.random.default_rng(12).standard_normal((1, 16, 3, 3))
    with torch.no_grad():
        _, mids_t = pam.forward_with_intermediates(torch.from_numpy(x))
    w = state_dict_to_numpy(pam)
    w["key_conv.bias"] = w["key_conv.bias"] + 1e-6
    _, mids = refimpl.position_attention(x, w, return_intermediates=True)
    with pytest.raises(AssertionError, match="first diverging step 'C'"):
        assert_named_close(mids, mids_t, 1e-10, order=["B", "C", "D", "energy", "S", "E"])
