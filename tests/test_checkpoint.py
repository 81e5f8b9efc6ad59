"""danet.load_checkpoint: every published layout, built here from its architecture, loads into DANet
with the same outputs; missing, unexpected and misshapen keys, wrong formats and bad files are refused.

Two independent re-statements stand in for the publishers' code (which is not a dependency):
``AuthorsDANet`` (junfu1115/DANet: encoding/models/backbone/resnet.py, encoding/nn/da_att.py,
encoding/models/sseg/danet.py) and ``MMSegDANet`` (mmsegmentation: backbones/resnet.py,
utils/res_layer.py, utils/self_attention_block.py, decode_heads/da_head.py, decode_head.py,
fcn_head.py, mmcv's Scale). Each owns its parameter names, so their state_dicts are the layouts
the importers must read, and their forwards are the semantics the imported DANet must reproduce.
Weights are random with non-trivial BatchNorm statistics and γ, β ≠ 0 (γ = 0 would make both
attention modules the identity and prove nothing).
"""

import os
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from danet import DANet, load_checkpoint, to_mmseg_state_dict
from danet.checkpoint import from_mmseg_state_dict

TOL = 1e-12  # float64, relative to the largest logit


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random convolutions (unit-variance outputs), BatchNorm affine and running statistics, γ, β ≠ 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=g)))
        for name, p in model.named_parameters():
            if name.endswith("gamma") or name.endswith("gamma.scale"):
                p.fill_(float(0.3 + 0.7 * torch.rand((), generator=g)) * (-1) ** len(name))
    return model.eval()


def assert_same(a: torch.Tensor, b: torch.Tensor):
    assert a.shape == b.shape
    err = (a - b).abs().max().item() / b.abs().max().item()
    assert err <= TOL, f"relative difference {err:.2e}"


def image(size=33, seed=1):
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# The authors' DANet, restated (their names, their layer4 multi-grid rule, their PAM/CAM order)


class AuthorsBottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class AuthorsResNet(nn.Module):
    """``dilated=True, os=8``: layer3 dilation 2 (first block 1), layer4 dilation 4 (first block 2),
    or with multi_dilation block i of layer4 has multi_dilation[i % len]. ``keep_fc``: the 2018
    backbone kept its ImageNet classifier; the 2020 one sets ``fc = None``."""

    def __init__(self, layers, deep_stem, multi_dilation=None, stem_width=64, keep_fc=False):
        super().__init__()
        w = stem_width
        self.inplanes = 2 * w if deep_stem else 64
        if deep_stem:
            self.conv1 = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                                       nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                                       nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False))
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.layer1 = self._make_layer(64, layers[0], 1, 1)
        self.layer2 = self._make_layer(128, layers[1], 2, 1)
        self.layer3 = self._make_layer(256, layers[2], 1, 2)
        self.layer4 = self._make_layer(512, layers[3], 1, 4, multi_dilation)
        self.fc = nn.Linear(2048, 1000) if keep_fc else None

    def _make_layer(self, planes, blocks, stride, dilation, multi_dilation=None):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        if multi_dilation:
            dilations = [multi_dilation[i % len(multi_dilation)] for i in range(blocks)]
        else:
            dilations = [1 if dilation in (1, 2) else 2] + [dilation] * (blocks - 1)
        layers = [AuthorsBottleneck(self.inplanes, planes, stride, dilations[0], downsample)]
        self.inplanes = planes * 4
        layers += [AuthorsBottleneck(self.inplanes, planes, 1, d) for d in dilations[1:]]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class AuthorsPAM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.query_conv, self.key_conv = nn.Conv2d(c, c // 8, 1), nn.Conv2d(c, c // 8, 1)
        self.value_conv = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.query_conv(x).view(b, -1, h * w).permute(0, 2, 1)               # (B, N, C')
        attention = torch.softmax(torch.bmm(q, self.key_conv(x).view(b, -1, h * w)), -1)  # (B, N, N)
        out = torch.bmm(self.value_conv(x).view(b, -1, h * w), attention.permute(0, 2, 1))  # (B, C, N)
        return self.gamma * out.view(b, c, h, w) + x


class AuthorsCAM(nn.Module):
    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        a = x.view(b, c, -1)                                                     # (B, C, N)
        energy = torch.bmm(a, a.permute(0, 2, 1))                                # (B, C, C)
        attention = torch.softmax(energy.max(-1, keepdim=True)[0].expand_as(energy) - energy, -1)
        return self.gamma * torch.bmm(attention, a).view(b, c, h, w) + x


def _cbr(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def _cls(cin, k):
    return nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(cin, k, 1))


class AuthorsHead(nn.Module):
    def __init__(self, cin, k):
        super().__init__()
        ci = cin // 4
        self.conv5a, self.conv5c, self.sa, self.sc = _cbr(cin, ci), _cbr(cin, ci), AuthorsPAM(ci), AuthorsCAM()
        self.conv51, self.conv52 = _cbr(ci, ci), _cbr(ci, ci)
        self.conv6, self.conv7, self.conv8 = _cls(ci, k), _cls(ci, k), _cls(ci, k)

    def forward(self, x):
        sa = self.conv51(self.sa(self.conv5a(x)))
        sc = self.conv52(self.sc(self.conv5c(x)))
        return self.conv8(sa + sc), self.conv6(sa), self.conv7(sc)


class AuthorsDANet(nn.Module):
    def __init__(self, k, layers, deep_stem=False, multi_dilation=None, keep_fc=False):
        super().__init__()
        self.pretrained = AuthorsResNet(layers, deep_stem, multi_dilation, keep_fc=keep_fc)
        self.head = AuthorsHead(2048, k)

    def forward(self, x):
        return tuple(F.interpolate(o, x.shape[2:], mode="bilinear", align_corners=True)
                     for o in self.head(self.pretrained(x)))


# ---------------------------------------------------------------------------------------------
# mmsegmentation's DANet (ResNetV1c + DAHead + FCN auxiliary head), restated with its names


class Scale(nn.Module):
    """mmcv's Scale: a learnable 0-dim factor."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.0))


class ConvModule(nn.Module):
    """mmcv ConvModule with a norm: conv (no bias) → bn → ReLU."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class MMBottleneck(AuthorsBottleneck):
    """mmseg Bottleneck, style 'pytorch': stride on conv2 (3×3, padding = dilation); norms bn1-3."""


class ResNetV1c(nn.Module):
    """deep stem 3→32→32→64 (stem.0-8), strides (1, 2, 1, 1), dilations (1, 1, 2, 4), contract_dilation."""

    def __init__(self, depth):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        inplanes = 64
        for i, (n, s, d) in enumerate(zip({50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth], (1, 2, 1, 1), (1, 1, 2, 4))):
            planes = 64 * 2 ** i
            down = None
            if s != 1 or inplanes != planes * 4:
                down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, s, bias=False), nn.BatchNorm2d(planes * 4))
            first = d // 2 if d > 1 else d                                       # contract_dilation
            blocks = [MMBottleneck(inplanes, planes, s, first, down)]
            blocks += [MMBottleneck(planes * 4, planes, 1, d) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes * 4

    def forward(self, x):
        x = F.max_pool2d(self.stem(x), 3, 2, 1)
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return outs


class MMPAM(nn.Module):
    """SelfAttentionBlock(channels=pam_channels, out=in, no norm, no out_project, no matmul_norm) + Scale."""

    def __init__(self, c, c_pam):
        super().__init__()
        self.key_project, self.query_project = nn.Conv2d(c, c_pam, 1), nn.Conv2d(c, c_pam, 1)
        self.value_project = nn.Conv2d(c, c, 1)
        self.gamma = Scale()

    def forward(self, x):
        b, c, h, w = x.shape
        query = self.query_project(x).reshape(b, -1, h * w).permute(0, 2, 1)    # (B, N, C')
        key = self.key_project(x).reshape(b, -1, h * w)                          # (B, C', N)
        value = self.value_project(x).reshape(b, -1, h * w).permute(0, 2, 1)    # (B, N, C)
        sim = F.softmax(torch.matmul(query, key), dim=-1)                        # (B, N, N)
        context = torch.matmul(sim, value).permute(0, 2, 1).reshape(b, c, h, w)  # (B, C, H, W)
        return context * self.gamma.scale + x


class MMCAM(nn.Module):
    def __init__(self):
        super().__init__()
        self.gamma = Scale()

    def forward(self, x):
        b, c, h, w = x.shape
        q = x.view(b, c, -1)                                                     # (B, C, N)
        energy = torch.bmm(q, q.permute(0, 2, 1))                                # (B, C, C)
        attention = F.softmax(torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy, dim=-1)
        return torch.bmm(attention, q).view(b, c, h, w) * self.gamma.scale + x


class DAHead(nn.Module):
    def __init__(self, cin, ch, c_pam, k):
        super().__init__()
        self.conv_seg, self.dropout = nn.Conv2d(ch, k, 1), nn.Dropout2d(0.1)    # BaseDecodeHead
        self.pam_in_conv, self.pam, self.pam_out_conv = ConvModule(cin, ch, 3), MMPAM(ch, c_pam), ConvModule(ch, ch, 3)
        self.pam_conv_seg = nn.Conv2d(ch, k, 1)
        self.cam_in_conv, self.cam, self.cam_out_conv = ConvModule(cin, ch, 3), MMCAM(), ConvModule(ch, ch, 3)
        self.cam_conv_seg = nn.Conv2d(ch, k, 1)

    def forward(self, inputs):
        x = inputs[3]                                                            # in_index=3
        pam_feat = self.pam_out_conv(self.pam(self.pam_in_conv(x)))
        cam_feat = self.cam_out_conv(self.cam(self.cam_in_conv(x)))
        return (self.conv_seg(self.dropout(pam_feat + cam_feat)), self.pam_conv_seg(self.dropout(pam_feat)),
                self.cam_conv_seg(self.dropout(cam_feat)))


class FCNHead(nn.Module):
    """num_convs=1, concat_input=False, on in_index=2."""

    def __init__(self, cin, ch, k):
        super().__init__()
        self.conv_seg, self.dropout = nn.Conv2d(ch, k, 1), nn.Dropout2d(0.1)
        self.convs = nn.Sequential(ConvModule(cin, ch, 3))

    def forward(self, inputs):
        return self.conv_seg(self.dropout(self.convs(inputs[2])))


class MMSegDANet(nn.Module):
    """EncoderDecoder: (pam_cam, pam, cam, aux) logits resized to the image with align_corners."""

    def __init__(self, k, depth=50, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.backbone = ResNetV1c(depth)
        self.decode_head = DAHead(2048, 512, 64, k)
        self.auxiliary_head = FCNHead(1024, 256, k)

    def forward(self, img):
        feats = self.backbone(img)
        outs = (*self.decode_head(feats), self.auxiliary_head(feats))
        return tuple(F.interpolate(o, img.shape[2:], mode="bilinear", align_corners=self.align_corners)
                     for o in outs)


# ---------------------------------------------------------------------------------------------
# project format


@pytest.mark.parametrize("attention", ["both", "pam", "cam", "none"])
def test_project_model_pt_and_training_checkpoint(tmp_path, attention):
    src = randomize_(DANet(5, "tiny", attention=attention))
    torch.save(src.state_dict(), tmp_path / "model.pt")
    torch.save({"model": src.state_dict(), "optimizer": {"state": {}, "param_groups": []}, "iteration": 7,
                "seconds": 1.5, "torch_rng": torch.get_rng_state()}, tmp_path / "ckpt_000007.pt")
    x = image()
    expected = src.double()(x)
    for name in ("model.pt", "ckpt_000007.pt"):
        model, info = load_checkpoint(str(tmp_path / name))
        assert (info.format, info.backbone, info.attention, info.num_classes) == ("project", "tiny", attention, 5)
        assert not model.training and info.ignored == () and info.sources["multi_grid"] == "format default"
        for a, b in zip(model.double()(x), expected, strict=True):
            assert_same(a, b)


@pytest.mark.parametrize("backbone,stem", [("tiny", "plain"), ("resnet18", "plain"), ("resnet34", "deep"),
                                            ("resnet50", "plain"), ("resnet101", "deep")])
def test_backbone_and_stem_are_read_from_the_weights(tmp_path, backbone, stem):
    torch.save(DANet(2, backbone, stem=stem).state_dict(), tmp_path / "model.pt")
    _, info = load_checkpoint(str(tmp_path / "model.pt"))
    assert (info.backbone, info.stem, info.sources["backbone"]) == (backbone, stem, "weights")


def test_project_overrides_reach_the_model(tmp_path):
    src = randomize_(DANet(3, "tiny", output_stride=16, align_corners=False, cam_variant="paper"))
    torch.save(src.state_dict(), tmp_path / "model.pt")
    model, info = load_checkpoint(str(tmp_path / "model.pt"), output_stride=16, align_corners=False,
                                  cam_variant="paper")
    assert (info.output_stride, info.align_corners, info.sources["output_stride"]) == (16, False, "override")
    x = image()
    assert_same(model.double()(x)[0], src.double()(x)[0])


# ---------------------------------------------------------------------------------------------
# the authors' format


def test_authors_danet101_layout_loads_with_every_key(tmp_path):
    """DANet-101 as released: plain stem, multi-grid (4, 8, 16), output stride 8, 2020 code (no fc)."""
    src = randomize_(AuthorsDANet(19, (3, 4, 23, 3), deep_stem=False, multi_dilation=(4, 8, 16)))
    torch.save({"epoch": 240, "state_dict": src.state_dict(), "best_pred": 0.8}, tmp_path / "DANet101.pth.tar")
    model, info = load_checkpoint(str(tmp_path / "DANet101.pth.tar"))  # strict: no missing/unexpected key
    assert (info.format, info.backbone, info.stem, info.multi_grid, info.num_classes) == \
        ("official", "resnet101", "plain", (4, 8, 16), 19)
    assert (info.ignored, info.filled, info.prefix_stripped, info.aux) == ((), (), "", False)
    x = image()
    for a, b in zip(model.double()(x), src.double()(x), strict=True):
        assert_same(a, b)


def test_an_authors_resnet50_file_gets_their_code_s_default_of_no_multi_grid(tmp_path, capsys):
    """Their code builds layer4 without multi-grid unless ``--multi-grid`` is given, and they released
    no DANet-50; it was built with DANet-101's (4, 8, 16): other dilations, another network."""
    from danet.cli import main

    src = randomize_(AuthorsDANet(4, (3, 4, 6, 3), deep_stem=False))
    torch.save({"state_dict": src.state_dict()}, tmp_path / "danet50.pth.tar")
    model, info = load_checkpoint(str(tmp_path / "danet50.pth.tar"))
    assert (info.format, info.backbone, info.multi_grid, info.sources["multi_grid"]) == \
        ("official", "resnet50", None, "format default")
    x = image()
    for a, b in zip(model.double()(x), src.double()(x), strict=True):
        assert_same(a, b)
    assert main(["export", "--checkpoint", str(tmp_path / "danet50.pth.tar"), "--out", str(tmp_path / "w.npz")]) == 0
    assert "resnet50): assumed multi_grid=None, their code's default" in capsys.readouterr().err


def test_authors_deep_stem_2018_fc_dataparallel_and_multi_grid_override(tmp_path):
    """Their deep stem (64-64-128), a 2018-style file keeping the ImageNet fc, saved from DataParallel
    (``module.``), layer4 without multi-grid."""
    src = randomize_(AuthorsDANet(4, (3, 4, 6, 3), deep_stem=True, keep_fc=True))
    state = {"module." + k: v for k, v in src.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "danet50.pth.tar")
    model, info = load_checkpoint(str(tmp_path / "danet50.pth.tar"), format="official", multi_grid=None)
    assert (info.backbone, info.stem, info.stem_width, info.multi_grid) == ("resnet50", "deep", 64, None)
    assert (info.ignored, info.prefix_stripped) == (("pretrained.fc.weight", "pretrained.fc.bias"), "module.")
    assert info.sources["multi_grid"] == "override"
    x = image()
    for a, b in zip(model.double()(x), src.double()(x), strict=True):
        assert_same(a, b)


# ---------------------------------------------------------------------------------------------
# mmsegmentation's format


@pytest.mark.parametrize("align_corners", [False, True])
def test_mmseg_import_equals_mmseg_semantics(tmp_path, align_corners):
    """The imported DANet reproduces the re-statement of mmseg's forward, aux head included; the
    769×769 configs' align_corners=True is read from the config text in meta."""
    src = randomize_(MMSegDANet(6, 50, align_corners))
    cfg = f"model = dict(\n    decode_head=dict(\n        type='DAHead',\n        align_corners={align_corners},\n" \
          f"    ),\n    auxiliary_head=dict(type='FCNHead', align_corners=False))"
    meta = {"config": cfg, "CLASSES": tuple("abcdef"), "mmseg_version": "0.x"}
    torch.save({"meta": meta, "state_dict": src.state_dict()}, tmp_path / "danet_r50.pth")
    model, info = load_checkpoint(str(tmp_path / "danet_r50.pth"))
    assert (info.format, info.backbone, info.stem, info.stem_width, info.multi_grid) == \
        ("mmseg", "resnet50", "deep", 32, None)
    assert (info.align_corners, info.sources["align_corners"], info.aux) == (align_corners, "meta", True)
    assert info.class_names == tuple("abcdef") and info.ignored == ()
    x = image()
    (fused, pam, cam), aux = model.double().forward_with_aux(x)
    for a, b in zip((fused, pam, cam, aux), src.double()(x), strict=True):
        assert_same(a, b)


def test_mmseg_without_meta_defaults_and_aux_left_out(tmp_path):
    src = randomize_(MMSegDANet(3, 50, align_corners=False))
    torch.save(src.state_dict(), tmp_path / "plain_state.pth")
    model, info = load_checkpoint(str(tmp_path / "plain_state.pth"), aux=False)
    assert (info.format, info.align_corners, info.sources["align_corners"]) == ("mmseg", False, "format default")
    assert model.auxlayer is None and not info.aux
    assert set(info.ignored) == {k for k in src.state_dict() if k.startswith("auxiliary_head.")}
    x = image()
    for a, b in zip(model.double()(x), src.double()(x)[:3], strict=True):
        assert_same(a, b)


@pytest.mark.parametrize("depth", [50, 101])
def test_to_mmseg_is_the_inverse_of_the_importer_and_gives_mmseg_layout(depth):
    name = f"resnet{depth}"
    ours = randomize_(DANet(4, name, stem="deep", stem_width=32, aux=True)).state_dict()
    mm = to_mmseg_state_dict(ours)
    layout = {k: tuple(v.shape) for k, v in MMSegDANet(4, depth).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mm.items()} == layout          # mmseg's names and shapes, () for γ
    back = from_mmseg_state_dict(mm)
    assert back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)
    again = to_mmseg_state_dict(back)
    assert again.keys() == mm.keys() and all(torch.equal(again[k], mm[k]) for k in mm)


def test_mmseg_resnet101_depth_is_read(tmp_path):
    torch.save({"meta": {}, "state_dict": MMSegDANet(19, 101).state_dict()}, tmp_path / "r101.pth")
    _, info = load_checkpoint(str(tmp_path / "r101.pth"), format="mmseg")
    assert (info.backbone, info.num_classes, info.aux) == ("resnet101", 19, True)


def test_mmseg_basic_block_refused(tmp_path):
    state = to_mmseg_state_dict(DANet(3, "resnet18", stem="deep", stem_width=32).state_dict())
    torch.save({"state_dict": state}, tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"r18\.pth.*format 'mmseg'.*BasicBlock"):
        load_checkpoint(str(tmp_path / "r18.pth"))


# ---------------------------------------------------------------------------------------------
# torchvision backbone


def test_torchvision_backbone_loaded_head_fresh(tmp_path):
    backbone = randomize_(DANet(2, "resnet50")).pretrained.state_dict()
    fc = {"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)}
    torch.save({**backbone, **fc}, tmp_path / "resnet50.pth")
    with pytest.raises(ValueError, match=r"resnet50\.pth.*format 'torchvision'.*num_classes"):
        load_checkpoint(str(tmp_path / "resnet50.pth"))
    model, info = load_checkpoint(str(tmp_path / "resnet50.pth"), num_classes=7)
    assert (info.format, info.backbone, info.num_classes, info.ignored) == \
        ("torchvision", "resnet50", 7, ("fc.weight", "fc.bias"))
    assert all(torch.equal(model.pretrained.state_dict()[k], v) for k, v in backbone.items())
    assert model.head.sa.gamma.item() == 0 and model.head.conv8[1].out_channels == 7


# ---------------------------------------------------------------------------------------------
# BatchNorm counters, aux head, refusals


def test_files_without_any_batchnorm_counter_load_and_say_so(tmp_path):
    state = randomize_(DANet(3, "tiny")).state_dict()
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    torch.save({k: v for k, v in state.items() if k not in counters}, tmp_path / "old.pt")
    _, info = load_checkpoint(str(tmp_path / "old.pt"))
    assert sorted(info.filled) == sorted(counters)
    torch.save({k: v for k, v in state.items() if k != counters[0]}, tmp_path / "one_missing.pt")
    with pytest.raises(ValueError, match=f"missing '{counters[0]}'"):
        load_checkpoint(str(tmp_path / "one_missing.pt"))


def test_aux_head_is_not_in_the_default_forward():
    model = randomize_(DANet(3, "tiny", aux=True))
    x = torch.randn(1, 3, 33, 33)
    outputs, aux = model.forward_with_aux(x)
    assert len(model(x)) == 3 and all(torch.equal(a, b) for a, b in zip(model(x), outputs))
    assert aux.shape == (1, 3, 33, 33)
    with pytest.raises(ValueError, match="aux=True"):
        DANet(3, "tiny").forward_with_aux(x)


def _project_file(tmp_path, edit):
    state = DANet(3, "tiny").state_dict()
    edit(state)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    return str(path)


def _mmseg_file(tmp_path, edit):
    state = MMSegDANet(3, 50).state_dict()
    edit(state)
    path = tmp_path / "edited_mmseg.pth"
    torch.save({"meta": {}, "state_dict": state}, path)
    return str(path)


def _saved(tmp_path, name, obj):
    torch.save(obj, tmp_path / name)
    return str(tmp_path / name)


def _garbage(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"\x00" + os.urandom(63))
    return str(tmp_path / "garbage.pt")


REFUSALS = {  # case: (make the file, format asked, what the message must say)
    "missing key": (lambda p: _project_file(p, lambda s: s.pop("head.conv8.1.bias")), "auto",
                    r"format 'project'.*missing 'head\.conv8\.1\.bias'"),
    "unexpected key": (lambda p: _project_file(p, lambda s: s.update({"head.extra.weight": torch.zeros(1)})),
                       "project", r"format 'project'.*unexpected 'head\.extra\.weight'"),
    "wrong shape": (lambda p: _mmseg_file(p, lambda s: s.update(
                        {"decode_head.pam.query_project.weight": torch.zeros(32, 512, 1, 1)})), "auto",
                    r"format 'mmseg'.*'head\.sa\.query_conv\.weight' has shape \(32, 512, 1, 1\), "
                    r"expected \(64, 512, 1, 1\)"),
    "unmapped mmseg key": (lambda p: _mmseg_file(p, lambda s: s.update({"decode_head.extra.weight": torch.zeros(1)})),
                           "auto", r"format 'mmseg'.*unexpected 'decode_head\.extra\.weight'"),
    "wrong format": (lambda p: _project_file(p, lambda s: None), "mmseg",
                     r"not in format 'mmseg'.*looks like format 'project'"),
    "garbage file": (_garbage, "auto", r"format 'auto'.*not a checkpoint"),
    "not a dict": (lambda p: _saved(p, "list.pt", [torch.zeros(1)]), "official", r"format 'official'.*holds a list"),
    "no state_dict": (lambda p: _saved(p, "epoch.pt", {"epoch": 3}), "auto", r"format 'auto'.*holds no state_dict"),
    "unknown layout": (lambda p: _saved(p, "x.pt", {"x.weight": torch.zeros(1)}), "auto",
                       r"format 'auto'.*not recognised"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_file_and_the_format(tmp_path, case):
    make, fmt, pattern = REFUSALS[case]
    path = make(tmp_path)
    with pytest.raises(ValueError) as err:
        load_checkpoint(path, format=fmt)
    message = str(err.value)
    assert f"checkpoint '{path}'" in message and "\n" not in message
    assert re.search(pattern, message), message


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*nowhere\.pt' \(format 'auto'\): no such file"):
        load_checkpoint(str(tmp_path / "nowhere.pt"))
    with pytest.raises(TypeError, match="unknown override"):
        load_checkpoint(str(tmp_path / "nowhere.pt"), pretrained_backbone="x")
    with pytest.raises(ValueError, match="format must be"):
        load_checkpoint(str(tmp_path / "nowhere.pt"), format="caffe")
