"""The PyTorch DANet: parameter counts, official state_dict names, ablation outputs, strict loading."""

import pytest
import torch

from danet import DANet, DANetHead, ResNet, load_state_dict_strict
from danet.model import load_backbone


def n_params(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_head_parameter_count_matches_official():
    assert n_params(DANetHead(2048, 19)) == 23_954_619


def test_head_state_dict_names_are_official():
    keys = set(DANetHead(2048, 19).state_dict())
    expected = {"conv5a.0.weight", "conv5a.1.weight", "conv5a.1.bias", "conv5a.1.running_mean",
                "conv5a.1.running_var", "conv5a.1.num_batches_tracked",
                "sa.query_conv.weight", "sa.query_conv.bias", "sa.key_conv.weight", "sa.key_conv.bias",
                "sa.value_conv.weight", "sa.value_conv.bias", "sa.gamma", "sc.gamma",
                "conv6.1.weight", "conv6.1.bias", "conv7.1.weight", "conv7.1.bias", "conv8.1.weight", "conv8.1.bias"}
    assert expected <= keys
    stems = {k.split(".")[0] for k in keys}
    assert stems == {"conv5a", "conv5c", "sa", "sc", "conv51", "conv52", "conv6", "conv7", "conv8"}


# torchvision's ResNet parameter counts without the 1000-way fc layer (published totals minus fc)
@pytest.mark.parametrize("name,count", [("resnet18", 11_689_512 - 513_000), ("resnet34", 21_797_672 - 513_000),
                                        ("resnet50", 25_557_032 - 2_049_000), ("resnet101", 44_549_160 - 2_049_000)])
def test_backbone_parameter_counts_match_torchvision(name, count):
    assert n_params(ResNet(name)) == count


def test_backbone_names_are_torchvision_under_pretrained_prefix():
    keys = set(DANet(19, "resnet50").state_dict())
    for k in ["pretrained.conv1.weight", "pretrained.bn1.running_var", "pretrained.layer1.0.conv3.weight",
              "pretrained.layer1.0.downsample.0.weight", "pretrained.layer4.2.bn3.bias", "head.sa.gamma"]:
        assert k in keys, k


@pytest.mark.parametrize("os_,size", [(8, 8), (16, 4), (32, 2)])
def test_output_stride(os_, size):
    feats = ResNet("tiny", output_stride=os_)(torch.zeros(1, 3, 64, 64))
    assert feats.shape == (1, 128, size, size)


def test_dilations_official_layout():
    r = ResNet("resnet50", 8)
    assert [b.conv2.dilation[0] for b in r.layer3] == [1] + [2] * 5
    assert [b.conv2.dilation[0] for b in r.layer4] == [2, 4, 4]
    assert [b.conv2.stride[0] for b in (r.layer3[0], r.layer4[0])] == [1, 1]
    mg = ResNet("resnet101", 8, multi_grid=(4, 8, 16))
    assert [b.conv2.dilation[0] for b in mg.layer4] == [4, 8, 16]


@pytest.mark.parametrize("attention,n_out", [("both", 3), ("pam", 1), ("cam", 1), ("none", 1)])
def test_ablation_outputs_at_input_resolution(attention, n_out):
    model = DANet(4, "tiny", attention=attention).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 40, 56))
    assert len(outs) == n_out
    assert all(o.shape == (2, 4, 40, 56) for o in outs)
    has = {k.split(".")[1] for k in model.state_dict() if k.startswith("head.")}
    assert ("sa" in has) == (attention in ("both", "pam"))
    assert ("sc" in has) == (attention in ("both", "cam"))


def test_fcn_is_pam_without_the_module():
    """"none" differs from "pam" only by the attention module's parameters."""
    pam = {k for k in DANet(4, "tiny", attention="pam").state_dict()}
    none = {k for k in DANet(4, "tiny", attention="none").state_dict()}
    assert pam - none == {k for k in pam if k.startswith("head.sa.")}
    assert none <= pam


def test_chunked_pam_in_model_gives_same_logits():
    torch.manual_seed(0)
    model = DANet(3, "tiny").eval()
    with torch.no_grad():
        model.head.sa.gamma.fill_(0.8)
        x = torch.randn(1, 3, 64, 80)
        ref = model(x)
        model.head.sa.impl, model.head.sa.chunk_size = "chunked", 7   # plain attributes
        got = model(x)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_strict_loading_lists_every_mismatch():
    model = DANet(3, "tiny")
    state = model.state_dict()
    state.pop("head.sa.gamma")
    state["extra.weight"] = torch.zeros(1)
    state["head.conv6.1.bias"] = torch.zeros(5)
    with pytest.raises(ValueError) as err:
        load_state_dict_strict(model, state, where="checkpoint x.pt")
    msg = str(err.value)
    assert "checkpoint x.pt" in msg and "missing 'head.sa.gamma'" in msg
    assert "unexpected 'extra.weight'" in msg and "'head.conv6.1.bias' has shape (5,), expected (3,)" in msg


def test_pretrained_backbone_loads_torchvision_layout(tmp_path):
    src = ResNet("tiny")
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in src.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 128)  # an ImageNet classifier is ignored
    torch.save(state, tmp_path / "r.pth")
    model = DANet(3, "tiny", pretrained_backbone=str(tmp_path / "r.pth"))
    torch.testing.assert_close(model.pretrained.conv1.weight, state["conv1.weight"])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone(ResNet("tiny"), str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match=r"100 problems.*'conv1.weight' has shape \(16, 3, 7, 7\), expected \(64.*and 88 more"):
        load_backbone(ResNet("resnet18"), str(tmp_path / "r.pth"))


@pytest.mark.parametrize("kwargs,match", [({"backbone": "resnet9"}, "unknown backbone"),
                                          ({"attention": "all"}, "attention must be one of"),
                                          ({"output_stride": 4}, "output_stride must be"),
                                          ({"cam_variant": "x"}, "variant must be one of"),
                                          ({"multi_grid": (1, 2, 4)}, "multi_grid")])
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DANet(3, **{"backbone": "tiny", **kwargs})
