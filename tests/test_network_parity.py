"""The whole network: refimpl.danet_forward against danet.DANet, compared stage by stage.

Every backbone (tiny, ResNet-18/34/50/101 — the big ones on tiny images) and every stem (plain,
deep w = 64 as the authors', deep w = 32 as mmsegmentation's ResNetV1c), with output strides,
multi-grid, ``dilated=False``, both ``align_corners`` and both CAM variants. Weights are random
with non-trivial BatchNorm statistics and γ, β ≠ 0 (γ = 0 makes the attention the identity), then
a model trained by ``pipeline.train.train`` for a few SGD steps. float64 must agree to 1e-10
(normwise relative, every stage); float32 separately to 1e-4. A failure names the first stage
that diverged: stem, maxpool, layer{i}.{j}, the head's feat1 ... feat_sum, the logits.
"""

import dataclasses

import numpy as np
import pytest
import torch

import refimpl
from danet import DANet, state_dict_to_numpy
from danet.network_check import torch_stages   # the stages of DANet.forward, named and ordered as refimpl's
from tests.conftest import assert_named_close, rel_err


def randomise(model: torch.nn.Module, seed: int, gamma_pam: float = 0.7, beta_cam: float = 0.3):
    """Random weights that keep activations O(1) through a deep net, BN statistics ≠ (0, 1), γ, β ≠ 0.

    Drawn with NumPy in float32 (several times faster than torch.randn for ResNet-101's 60 M
    numbers) and copied into the model's dtype.
    """
    rng = np.random.default_rng(seed)

    def normal(shape, std):
        return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32) * np.float32(std))

    def uniform(shape, low, high):
        return torch.from_numpy(rng.uniform(low, high, tuple(shape)).astype(np.float32))

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 4:                                     # conv: He-style scale, fan-in
                p.copy_(normal(p.shape, (2 / p[0].numel()) ** 0.5))
            elif name.endswith("gamma"):
                p.fill_(beta_cam if name.startswith("head.sc") else gamma_pam)
            elif name.endswith(".weight"):                       # BN scale
                p.copy_(uniform(p.shape, 0.5, 1.0))
            else:                                                # BN shift, conv bias
                p.copy_(normal(p.shape, 0.1))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(normal(b.shape, 0.1))
            elif name.endswith("running_var"):
                b.copy_(uniform(b.shape, 0.5, 1.5))
    return model.eval()


# (id, DANet kwargs, danet_forward kwargs beyond those shared, image (B, H0, W0))
CASES = [
    ("tiny-plain-os8", dict(backbone="tiny"), {}, (2, 48, 40)),
    ("tiny-deep16-os8-acF", dict(backbone="tiny", stem="deep", align_corners=False), {}, (2, 40, 48)),
    ("tiny-plain-os16-acF-paper", dict(backbone="tiny", output_stride=16, align_corners=False,
                                       cam_variant="paper"), {}, (1, 48, 40)),
    ("tiny-plain-os32", dict(backbone="tiny", output_stride=32), {}, (1, 64, 72)),
    ("tiny-plain-undilated", dict(backbone="tiny", dilated=False), {}, (1, 48, 40)),
    ("tiny-plain-multigrid", dict(backbone="tiny", multi_grid=(4, 8)), {}, (1, 33, 35)),
    ("resnet18-plain-os8", dict(backbone="resnet18"), {"backbone": "resnet18"}, (1, 32, 32)),
    ("resnet18-deep32-os16-acF", dict(backbone="resnet18", output_stride=16, stem="deep", stem_width=32,
                                      align_corners=False), {"stem": "deep", "stem_width": 32}, (1, 48, 40)),
    ("resnet34-plain-multigrid-acF", dict(backbone="resnet34", multi_grid=(4, 8, 16), align_corners=False),
     {}, (1, 33, 33)),
    ("resnet50-plain-os8", dict(backbone="resnet50"), {"backbone": "resnet50", "stem": "plain"}, (1, 33, 33)),
    ("resnet50-deep64-os16", dict(backbone="resnet50", stem="deep", output_stride=16), {}, (1, 33, 33)),
    ("resnet50-deep32-os8-acF", dict(backbone="resnet50", stem="deep", stem_width=32, align_corners=False),
     {}, (1, 32, 40)),
    ("resnet101-plain-multigrid", dict(backbone="resnet101", multi_grid=(4, 8, 16)), {}, (1, 33, 33)),
]
SHARED = ("output_stride", "multi_grid", "dilated", "align_corners", "cam_variant")


def _model_and_inputs(model_kw, image_shape, seed, dtype=torch.float64):
    torch.manual_seed(seed)
    model = randomise(DANet(5, **model_kw), seed).to(dtype)
    x = np.random.default_rng(seed).standard_normal((image_shape[0], 3, *image_shape[1:]))
    x = x.astype(np.float32 if dtype == torch.float32 else np.float64)
    kwargs = {k: v for k, v in model_kw.items() if k in SHARED}
    return model, x, kwargs


def _compare(model, x, kwargs, rtol):
    theirs = torch_stages(model, torch.from_numpy(x))
    *outputs, ours = refimpl.danet_forward(x, state_dict_to_numpy(model), return_stages=True, **kwargs)
    assert list(ours) == list(theirs), "refimpl and torch name different stages"
    assert_named_close(ours, theirs, rtol, order=list(ours))
    for name, out in zip(("fused", "pam", "cam"), outputs):
        K = model.head.conv6[1].out_channels
        assert out.dtype == x.dtype and out.shape == (x.shape[0], K, *x.shape[2:]), name
        assert out is ours[name]
    return ours


@pytest.mark.parametrize("case_id,model_kw,forward_kw,image_shape", CASES, ids=[c[0] for c in CASES])
def test_float64_matches_torch_stage_by_stage(case_id, model_kw, forward_kw, image_shape):
    model, x, kwargs = _model_and_inputs(model_kw, image_shape, seed=len(case_id))
    ours = _compare(model, x, {**kwargs, **forward_kw}, rtol=1e-10)
    # the attention modules are not the identity here: γ, β ≠ 0 change the features measurably
    assert rel_err(ours["sa_feat"], ours["feat1"]) > 1e-3
    assert rel_err(ours["sc_feat"], ours["feat2"]) > 1e-3


@pytest.mark.parametrize("model_kw,image_shape", [
    (dict(backbone="tiny", stem="deep", align_corners=False), (2, 48, 40)),
    (dict(backbone="resnet50", stem="deep", stem_width=32, multi_grid=(4, 8, 16)), (1, 33, 33)),
], ids=["tiny-deep", "resnet50-deep32-multigrid"])
def test_float32_matches_torch_loosely(model_kw, image_shape):
    model, x, kwargs = _model_and_inputs(model_kw, image_shape, seed=3, dtype=torch.float32)
    _compare(model, x, kwargs, rtol=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DANet after a few SGD steps of the pipeline's own training loop on the built-in data."""
    from pipeline import synthetic
    from pipeline.presets import PRESETS
    from pipeline.train import train

    root = tmp_path_factory.mktemp("keyed")
    synthetic.generate(str(root), n_train=6, n_val=2, seed=5)
    data = synthetic.KeyedShapes(root, "train")
    torch.manual_seed(0)
    model = DANet(4, "tiny")
    preset = dataclasses.replace(PRESETS["smoke"], iterations=8, lr=0.02, checkpoint_every=8)
    train(model, data, preset, str(tmp_path_factory.mktemp("run")), progress=False)
    g = {"gamma_pam": model.head.sa.gamma.item(), "beta_cam": model.head.sc.gamma.item()}
    assert all(v != 0.0 for v in g.values()), f"training left an attention scale at 0: {g}"
    images = torch.stack([data[i][0] for i in range(2)]).numpy()              # (2, 3, H0, W0)
    return model.eval(), images


def test_trained_model_float64(trained):
    model, images = trained
    model = DANet(4, "tiny").double().eval()
    model.load_state_dict(trained[0].state_dict())
    ours = _compare(model, images.astype(np.float64), {}, rtol=1e-10)
    trained_bn = trained[0].pretrained.bn1
    assert not torch.allclose(trained_bn.running_var, torch.ones_like(trained_bn.running_var))
    assert rel_err(ours["sa_feat"], ours["feat1"]) > 1e-4 and rel_err(ours["sc_feat"], ours["feat2"]) > 1e-3


def test_trained_model_float32(trained):
    model, images = trained
    _compare(model, images.astype(np.float32), {}, rtol=1e-4)


def test_a_perturbed_weight_is_caught_and_named():
    """The comparison can fail: a 1e-6 change in one layer3 BN statistic is named as 'layer3.0'."""
    model, x, kwargs = _model_and_inputs(dict(backbone="tiny"), (1, 32, 32), seed=11)
    theirs = torch_stages(model, torch.from_numpy(x))
    w = state_dict_to_numpy(model)
    w["pretrained.layer3.0.bn2.running_var"] = w["pretrained.layer3.0.bn2.running_var"] + 1e-6
    *_, ours = refimpl.danet_forward(x, w, return_stages=True)
    with pytest.raises(AssertionError, match="first diverging step 'layer3.0'"):
        assert_named_close(ours, theirs, 1e-10, order=list(ours))


# ------------------------------------------------------------------ weights and arguments refused

@pytest.fixture(scope="module")
def tiny_weights():
    model = randomise(DANet(3, "tiny").double(), seed=2)
    return state_dict_to_numpy(model), np.random.default_rng(2).standard_normal((1, 3, 32, 32))


@pytest.mark.parametrize("edit,message", [
    (lambda w: w.pop("pretrained.layer2.1.bn1.running_mean"), "missing array 'pretrained.layer2.1.bn1.running_mean'"),
    (lambda w: w.pop("head.conv8.1.bias"), "missing array 'head.conv8.1.bias'"),
    (lambda w: w.__setitem__("head.extra.weight", np.ones(3)), "unexpected array 'head.extra.weight'"),
    (lambda w: w.__setitem__("pretrained.layer4.0.conv2.weight", np.ones((128, 128, 1, 1))),
     r"array 'pretrained.layer4.0.conv2.weight' has shape \(128, 128, 1, 1\), expected \(128, 128, 3, 3\)"),
    (lambda w: w.__setitem__("head.sa.gamma", np.ones(2)), r"'head.sa.gamma' has shape \(2,\)"),
    (lambda w: w.pop("pretrained.layer3.0.conv1.weight"),
     "cannot tell the backbone's architecture: missing array 'pretrained.layer3.0.conv1.weight'"),
])
def test_bad_weights_are_refused_by_name(tiny_weights, edit, message):
    w, x = dict(tiny_weights[0]), tiny_weights[1]
    edit(w)
    with pytest.raises(refimpl.WeightError, match=message):
        refimpl.danet_forward(x, w)


@pytest.mark.parametrize("kwargs,message", [
    ({"backbone": "resnet18"}, r"'pretrained.conv1.weight' has shape \(16, 3, 7, 7\), expected \(64, 3, 7, 7\)"),
    ({"stem": "deep"}, "missing array 'pretrained.conv1.0.weight'"),
])
def test_weights_that_do_not_fit_the_named_architecture_are_refused(tiny_weights, kwargs, message):
    with pytest.raises(refimpl.WeightError, match=message):
        refimpl.danet_forward(tiny_weights[1], tiny_weights[0], **kwargs)


@pytest.mark.parametrize("image,kwargs,message", [
    (np.ones((1, 3, 32, 32), dtype=np.int64), {}, "floating-point"),
    (np.ones((1, 1, 32, 32)), {}, r"\(B, 3, H0, W0\)"),
    (np.ones((3, 32, 32)), {}, r"\(B, 3, H0, W0\)"),
    (np.ones((1, 3, 32, 32)), {"output_stride": 4}, "output_stride must be 8, 16 or 32"),
    (np.ones((1, 3, 32, 32)), {"multi_grid": (4, 8, 16)}, "needs output_stride 8 and 2 entries"),
    (np.ones((1, 3, 32, 32)), {"cam_variant": "mmseg"}, "cam_variant must be one of"),
    (np.ones((1, 3, 32, 32)), {"backbone": "resnet9"}, "unknown backbone 'resnet9'"),
    (np.ones((1, 3, 32, 32)), {"stem_width": 32}, "applies to the deep stem only"),
])
def test_bad_arguments_are_refused(tiny_weights, image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        refimpl.danet_forward(image, tiny_weights[0], **kwargs)


def test_weight_shapes_match_the_torch_state_dict():
    for kw in (dict(backbone="resnet50"), dict(backbone="resnet18", stem="deep", stem_width=32),
               dict(backbone="tiny", output_stride=32)):
        sd = DANet(7, **kw).state_dict()
        want = {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
        got = refimpl.danet_weight_shapes(7, kw["backbone"], stem=kw.get("stem", "plain"),
                                          stem_width=kw.get("stem_width"), output_stride=kw.get("output_stride", 8))
        assert got == want, kw


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(33, 40), (7, 5), (3, 2), (1, 1), (5, 1)])   # up, same, down, degenerate
def test_resize_and_pool_match_torch(size, align_corners):
    x = np.random.default_rng(sum(size)).standard_normal((2, 3, 7, 5))
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size, mode="bilinear", align_corners=align_corners)
    assert rel_err(refimpl.interpolate_bilinear(x, size, align_corners=align_corners), want.numpy()) <= 1e-14
    pooled = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1).numpy()
    assert np.array_equal(refimpl.max_pool2d(x, 3, 2, 1), pooled)


def test_resnet_alone_matches_danet_resnet_and_checks_its_weights():
    from danet import ResNet

    torch.manual_seed(4)
    net = randomise(ResNet("tiny", output_stride=16, stem="deep"), seed=4).double()
    x = np.random.default_rng(4).standard_normal((2, 3, 40, 32))
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    w = state_dict_to_numpy(net)
    assert rel_err(refimpl.resnet(x, w, output_stride=16), want) <= 1e-10
    w.pop("layer2.0.bn1.bias")
    with pytest.raises(refimpl.WeightError, match="resnet weights: missing array 'layer2.0.bn1.bias'"):
        refimpl.resnet(x, w, output_stride=16)
