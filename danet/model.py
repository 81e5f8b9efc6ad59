"""DANet: dilated ResNet + DANet head, logits upsampled to the input size (paper Fig. 2)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from danet.attention import DEFAULT_CHUNK_SIZE
from danet.aux_head import FCNHead
from danet.backbone import ARCHS, ResNet
from danet.head import ATTENTIONS, DANetHead


class DANet(nn.Module):
    """Dual Attention Network for semantic segmentation.

    Parameters
    ----------
    num_classes : K.
    backbone : ``"tiny" | "resnet18" | "resnet34" | "resnet50" | "resnet101"``.
    output_stride : 8 (the paper), 16 or 32.
    multi_grid : layer4 dilations, e.g. (4, 8, 16) as in the official Cityscapes recipe.
    attention : ``"both"`` (DANet), ``"pam"``, ``"cam"`` or ``"none"`` (dilated FCN baseline).
    cam_variant : ``"official"`` (released code) or ``"paper"`` (eq. 3 as printed).
    pretrained_backbone : path or URL of a torchvision ResNet ``state_dict`` (``fc.*`` ignored);
        every other key and shape must match, or loading is refused with the list of mismatches.
    align_corners : bilinear upsampling convention; True as in the official code.
    dilated : False keeps output stride 8 without dilation (a short receptive field).
    stem, stem_width : ``"plain"`` 7×7 stem or ``"deep"`` 3×3 w-w-2w stem, see :class:`danet.ResNet`.
    aux : also build ``auxlayer``, an FCN head on layer3 (:class:`danet.aux_head.FCNHead`, the
        authors' ``auxlayer``; mmsegmentation's ``auxiliary_head``). ``forward`` never uses it;
        ``forward_with_aux`` returns its logits beside the usual outputs.
    pam_chunk_size : query-block size of ``pam_impl="chunked"`` (default 1024); ignored otherwise.
    pam_impl : how the position attention out = γ·D·softmax(BᵀC)ᵀ + A is computed:
        ``"explicit"`` (default; the N×N matrix at once, as the official code), ``"chunked"``
        (query blocks of ``pam_chunk_size``) or
        ``"sdpa"`` (``scaled_dot_product_attention``, a fused kernel). Same logits; for a whole
        1024×2048 image (N = 32,768) the explicit N×N matrix alone is 4 GiB in float32.

    Forward returns a tuple of logits (B, K, H0, W0): ``(fused, pam, cam)`` for ``"both"``,
    a 1-tuple for the others (``(pam,)``, ``(cam,)``, ``(fcn,)``). Element 0 is what evaluation
    uses; the training loss is the sum of the cross-entropies of all elements.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", output_stride: int = 8,
                 multi_grid=None, attention: str = "both", cam_variant: str = "official",
                 pretrained_backbone: str | None = None, align_corners: bool = True,
                 dilated: bool = True, pam_chunk_size: int = DEFAULT_CHUNK_SIZE, pam_impl: str = "explicit",
                 stem: str = "plain", stem_width: int | None = None, aux: bool = False):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"DANet: attention must be one of {ATTENTIONS}, got {attention!r}")
        if backbone not in ARCHS:
            raise ValueError(f"DANet: unknown backbone {backbone!r}; choose one of {sorted(ARCHS)}")
        self.align_corners = align_corners
        # what the weights cannot tell: pipeline.train saves it in each training checkpoint, load_checkpoint reads it
        self.settings = {"output_stride": output_stride, "multi_grid": None if multi_grid is None else list(multi_grid),
                         "dilated": dilated, "cam_variant": cam_variant, "align_corners": align_corners}
        self.pretrained = ResNet(backbone, output_stride, multi_grid, dilated, stem, stem_width)  # official prefix
        self.head = DANetHead(self.pretrained.out_channels, num_classes, cam_variant=cam_variant,
                              attention=attention, pam_chunk_size=pam_chunk_size, pam_impl=pam_impl)
        self.auxlayer = FCNHead(self.pretrained.layer3_channels, num_classes) if aux else None
        if pretrained_backbone:
            load_backbone(self.pretrained, pretrained_backbone)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature map A (B, C, H0/os, W0/os), the head's input."""
        return self.pretrained(x)

    def gammas(self) -> dict:
        """The learned attention scales: PAM's γ and CAM's β (None where the module is absent)."""
        return {"gamma_pam": self.head.sa.gamma.item() if hasattr(self.head, "sa") else None,
                "beta_cam": self.head.sc.gamma.item() if hasattr(self.head, "sc") else None}

    def untrained_attention(self) -> str | None:
        """A warning when the model has attention and every scale is exactly 0, as initialised: each
        module is then the identity (γ·E + A = A), so the output does not depend on it; else None."""
        scales = {k: v for k, v in self.gammas().items() if v is not None}
        if not scales or any(v != 0.0 for v in scales.values()):
            return None
        return ("γ (PAM) and β (CAM) are both 0, as initialised: the attention modules are the identity (untrained), "
                "so the output ignores them and a NumPy check proves nothing about PAM or CAM"
                if len(scales) == 2 else "the attention scale is 0, as initialised: the module is the identity (untrained)")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = x.shape[2:]
        outputs = self.head(self.pretrained(x))                           # each (B, K, H, W)
        return tuple(F.interpolate(o, size, mode="bilinear", align_corners=self.align_corners)
                     for o in outputs)                                    # each (B, K, H0, W0)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """``(forward(x), aux logits)``; the auxiliary FCN head reads layer3, logits (B, K, H0, W0)."""
        if self.auxlayer is None:
            raise ValueError("DANet.forward_with_aux: this model was built without aux=True")
        size = x.shape[2:]
        c3, c4 = self.pretrained.stages(x)                                # layer3, layer4 maps
        logits = (*self.head(c4), self.auxlayer(c3))                      # each (B, K, H, W)
        up = [F.interpolate(o, size, mode="bilinear", align_corners=self.align_corners) for o in logits]
        return tuple(up[:-1]), up[-1]                                     # each (B, K, H0, W0)


def load_backbone(backbone: nn.Module, source: str) -> None:
    """Load torchvision ResNet weights from a file or URL into ``backbone``, refusing mismatches."""
    if "://" in source:
        state = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True)
    else:
        if not os.path.exists(source):
            raise FileNotFoundError(f"pretrained_backbone: file '{source}' does not exist")
        state = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("pretrained."): v for k, v in state.items() if not k.startswith("fc.")}
    fill_bn_counters(backbone, state)
    load_state_dict_strict(backbone, state, where=f"pretrained_backbone '{source}'")


def fill_bn_counters(module: nn.Module, state: dict, prefix: str = "") -> list:
    """In a state_dict with no BatchNorm ``num_batches_tracked`` counter at all (torch before 0.4.1:
    torchvision's ImageNet ResNet files), set ``module``'s counters (named under ``prefix``) to 0 and
    return their names; they never enter an eval-mode forward. One that has some but lacks others is
    left to fail the strict load."""
    if any(k.endswith("num_batches_tracked") for k in state):
        return []
    filled = [k for k in module.state_dict(prefix=prefix) if k.endswith("num_batches_tracked")]
    for k in filled:
        state[k] = torch.zeros((), dtype=torch.long)
    return filled


def load_state_dict_strict(module: nn.Module, state: dict, where: str) -> None:
    """Copy ``state`` into ``module`` only if every key and shape matches; else list every mismatch."""
    own = module.state_dict()
    problems = [f"missing '{k}'" for k in own if k not in state]
    problems += [f"unexpected '{k}'" for k in state if k not in own]
    problems += [f"'{k}' has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
                 for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if problems:
        shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
        raise ValueError(f"{where} does not match the model ({len(problems)} problems): " + "; ".join(shown))
    check_finite(state, where)
    module.load_state_dict(state)


def check_finite(state: dict, where: str) -> None:
    """Refuse a state_dict holding NaN or inf, naming its first such key (in the file's order): such
    weights give a prediction of one class everywhere, silently."""
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int(v.numel() - torch.isfinite(v).sum())
            raise ValueError(f"{where}: '{k}' holds {bad} non-finite values (NaN or inf) out of {v.numel()}")


def receptive_field(model: DANet) -> dict:
    """Theoretical receptive field of the model's local (FCN) path, in input pixels.

    Walks the convolutions and poolings along the main path in forward order (the 1×1
    ``downsample`` shortcuts add nothing and are skipped) with the usual recursion

        r ← r + (k − 1)·d·j,    j ← j·s        (kernel k, dilation d, stride s; r = j = 1 at the input)

    then the head's two 3×3 convolutions (conv5a, conv51), and finally the bilinear upsampling of
    the logits, whose output pixel mixes two neighbouring feature cells j pixels apart (+ j).
    The attention modules are global and are not counted: this is what the FCN baseline sees.

    Returns ``{"receptive_field": r, "jump": j, "layers": [(name, k, d, s, r), ...]}``.
    """
    r, j, layers = 1, 1, []

    def step(name, k, d, s):
        nonlocal r, j
        r += (k - 1) * d * j
        j *= s
        layers.append((name, k, d, s, r))

    for name, m in model.pretrained.named_modules():
        if "downsample" in name:
            continue
        if isinstance(m, nn.Conv2d):
            step(name, m.kernel_size[0], m.dilation[0], m.stride[0])
        elif isinstance(m, nn.MaxPool2d):
            step(name, m.kernel_size, m.dilation, m.stride)
    step("head.conv5a", 3, 1, 1)
    step("head.conv51", 3, 1, 1)
    r += j
    layers.append(("upsample", 2, 1, 1, r))
    return {"receptive_field": r, "jump": j, "layers": layers}
