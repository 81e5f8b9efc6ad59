"""Dilated ResNet backbones with torchvision's parameter names.

Parameter names follow ``torchvision.models.resnet`` (``conv1``, ``bn1``, ``layer1``…``layer4``,
``downsample.0/1``), so torchvision's ImageNet weights load by name. A dilated ResNet (Yu & Koltun;
DeepLab) trades the strides of the last stages for dilations: output stride 8 keeps layer3 and
layer4 at 1/8 of the input with dilations 2 and 4, so the receptive field keeps growing while
the feature map stays large enough for dense prediction.

``"tiny"`` is this project's narrow ResNet-18-style net (widths 16, 32, 64, 128) that trains on
two CPU cores in minutes; it is not an ImageNet model.

Two stems: ``"plain"`` is torchvision's 7×7 convolution (how the authors released DANet-101);
``"deep"`` is three 3×3 convolutions w → w → 2w (ResNet-C of Bag of Tricks, He et al. 2019) with the
authors' names ``conv1.0/.1/.3/.4/.6`` and ``bn1`` over 2w channels. The authors' deep stem has
w = 64 (layer1 then takes 128 channels); mmsegmentation's ResNetV1c has w = 32 (64 channels, so
layer1 onward is torchvision's).
"""

from __future__ import annotations

from torch import nn

from refimpl import backbone as _spec   # the architecture tables; the forward computation here is torch's


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3×3 conv), as torchvision and the official code."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


STEMS = _spec.STEMS
BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
# name -> (block, blocks per stage, stage widths): refimpl.backbone.ARCHS with the torch block classes
ARCHS = {name: (BLOCKS[kind], layers, widths) for name, (kind, layers, widths) in _spec.ARCHS.items()}


class ResNet(nn.Module):
    """Dilated ResNet returning the layer4 feature map (B, C_out, H0/os, W0/os).

    Parameters
    ----------
    name : one of :data:`ARCHS`.
    output_stride : 8, 16 or 32. Stages past that stride keep stride 1 and dilate instead.
    multi_grid : dilations of layer4's blocks, e.g. (4, 8, 16) (official Cityscapes recipe);
        needs output_stride 8 and one entry per layer4 block.
    stem : ``"plain"`` (7×7, stride 2) or ``"deep"`` (3×3 convs w, w, 2w; module docstring).
    stem_width : w of the deep stem (default: the first stage width, 64 for the ImageNet ResNets,
        as the authors' code; mmsegmentation's ResNetV1c uses 32).
    dilated : with False, stages past the output stride keep stride 1 but no dilation -- a
        backbone with a deliberately short receptive field (used by the built-in dataset's study).
    """

    def __init__(self, name: str = "resnet50", output_stride: int = 8, multi_grid=None, dilated: bool = True,
                 stem: str = "plain", stem_width: int | None = None):
        super().__init__()
        if name not in ARCHS:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(ARCHS)}")
        block, layers, widths = ARCHS[name]
        # (stride, dilation of each block) of layer1 ... layer4; refuses a bad output_stride / multi_grid
        plan = _spec.stage_plan(layers, output_stride, multi_grid, dilated)
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {STEMS}")
        if stem == "plain":
            if stem_width is not None:
                raise ValueError(f"stem_width={stem_width} applies to the deep stem only")
            self.inplanes = widths[0]
            self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        else:
            w = stem_width or widths[0]
            self.inplanes = 2 * w
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False))
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        # stride and dilations per stage from refimpl.backbone.stage_plan: the stem and layer2 bring the
        # stride to 8, layer3/4 dilate past the output stride, the first block of a stage keeps the
        # previous stage's dilation (torchvision's convention)
        for i, (stride, dilations) in enumerate(plan):
            setattr(self, f"layer{i + 1}", self._make_layer(block, widths[i], stride, dilations))
        self.out_channels = widths[3] * block.expansion
        self.layer3_channels = widths[2] * block.expansion   # input of an auxiliary head
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes, stride, dilations):
        """One stage: len(dilations) blocks, the first with ``stride``."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, dilations[0], downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, d) for d in dilations[1:]]
        return nn.Sequential(*layers)

    def stages(self, x):
        """(layer3 map, layer4 map): what an auxiliary head on layer3 and the DANet head read."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))    # (B, w0 or 2w, H0/4, W0/4)
        x = self.layer2(self.layer1(x))                         # (B, w1·e, H0/8, W0/8)
        c3 = self.layer3(x)                                     # (B, w2·e, H0/8 or /16, ...)
        return c3, self.layer4(c3)                              # (B, w3·e, H0/os, W0/os)

    def forward(self, x):
        return self.stages(x)[1]                                # (B, w3·e, H0/os, W0/os)
