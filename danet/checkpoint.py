"""Load a DANet checkpoint written by this project, by the authors, by mmsegmentation, or a
torchvision ImageNet ResNet for the backbone: ``load_checkpoint(path, format="auto", **overrides)``.

Every file is read with ``torch.load(..., weights_only=True)`` (a file that pickles other objects
than tensors and containers is refused, naming it), renamed into this project's names,
and copied only if every key and shape matches (``danet.load_state_dict_strict``); a mismatch is
refused with the list, naming the file and the format tried. What cannot be read from the weights
(output stride, multi-grid, ``align_corners``, the CAM variant) comes from the format's default
below or from an override, and ``CheckpointInfo.sources`` says which.

Formats
-------
``project``
    ``model.pt`` of ``pipeline.tasks.TrainedModel`` (a plain ``DANet.state_dict()``) or a training
    checkpoint ``ckpt_*.pt`` of ``pipeline.train`` (a dict whose ``"model"`` is that state_dict,
    beside ``"settings"``, optimizer, iteration and RNG states). The weights cannot tell output
    stride, multi-grid, dilation or the CAM variant. A training checkpoint saves them
    (``DANet.settings``, source ``"checkpoint"``), written during the run, before any record; for a
    ``model.pt`` they come from the ``params.json`` the pipeline writes beside it (one folder up for
    ``work/ckpt_*.pt``, whose class names it gives), source ``"params.json"``. A record whose class
    count or attention disagrees with the weights is refused, and so is a file beside it whose
    SHA-256 is not the record's ``model_sha256`` (a record from before the hash was kept cannot
    tell). With neither: output stride 8, no multi-grid, dilated, the official CAM,
    ``align_corners=True`` (``danet`` warns that they are assumed) -- pass what differs (the
    Cityscapes and VOC presets train with ``multi_grid=(4, 8, 16)``, the tutorial preset with
    ``dilated=False``).
``official``
    The authors' release (junfu1115/DANet): a ``.pth.tar`` dict with ``"state_dict"`` (keys may
    carry DataParallel's ``module.``), backbone under ``pretrained.``, head under ``head.``; the
    names are this project's, so no renaming. Defaults: output stride 8, ``align_corners=True``,
    and ``multi_grid=(4, 8, 16)`` for ResNet-101 -- DANet-101 as released and evaluated (README:
    ``--multi-grid --multi-dilation 4 8 16 --os 8 --no-deepstem``) -- else no multi-grid, the default
    of their code (``--multi-grid`` is off unless given; they released no other DANet), which
    ``danet`` warns is assumed.
``mmseg``
    mmsegmentation's DANet checkpoints: ``{"meta", "state_dict"}``, ResNetV1c backbone under
    ``backbone.``, ``DAHead`` under ``decode_head.``, an FCN ``auxiliary_head`` on layer3. Built as
    ``DANet(stem="deep", stem_width=32, align_corners=False)``; ``align_corners`` is read from
    the config text in ``meta`` when there is one (the 769×769 Cityscapes configs set it True).
    The auxiliary head is **loaded** into ``DANet.auxlayer`` (``forward_with_aux`` returns its
    logits; ``forward`` never uses it); with ``aux=False`` its keys are left out and listed in
    ``CheckpointInfo.ignored``. The imported model computes mmseg's function: the same layers in
    the same order, PAM's product taken as D·Sᵀ where mmseg takes (S·Dᵀ)ᵀ, so the logits agree to
    rounding (≤ 1e-12 relative in float64 in ``tests/test_checkpoint.py``, against a re-statement
    of mmseg's forward).
``torchvision``
    An ImageNet ResNet ``state_dict`` (``conv1``, ``bn1``, ``layer1``…``layer4``, ``fc``): the
    backbone is loaded (``fc.*`` ignored), the head is freshly initialised; ``num_classes`` is
    required. Same as ``DANet(pretrained_backbone=path)``, with the depth read from the file.

``format="auto"`` picks ``mmseg`` for ``backbone.``/``decode_head.`` keys, ``official`` for
``pretrained.``/``head.`` keys inside ``"state_dict"``, ``project`` for them as a plain
state_dict or inside ``"model"``, ``torchvision`` for unprefixed ``conv1``/``layer1`` keys.
From the weights: backbone depth (blocks per stage: layer3 has 6 in ResNet-50, 23 in ResNet-101;
bottleneck if ``layer1.0.conv3`` exists; ``"tiny"`` by its 16-channel layer1), stem (``conv1``
7×7 or ``conv1.0/.1/.3/.4/.6``) and its width, number of classes, the ablation (which of ``sa``,
``sc``, ``conv5a`` exist), the auxiliary head. A BatchNorm ``num_batches_tracked`` counter absent
from a file saved by an old torch is set to 0 and listed in ``CheckpointInfo.filled`` (it does
not enter an eval-mode forward); every other missing key is refused.

mmsegmentation → DANet names (``to_mmseg_state_dict`` is the inverse)
----------------------------------------------------------------------
==========================================  ========================================
mmseg                                       DANet
==========================================  ========================================
backbone.stem.0 / .1 / .3 / .4 / .6         pretrained.conv1.0 / .1 / .3 / .4 / .6
backbone.stem.7                             pretrained.bn1
backbone.conv1, backbone.bn1 (ResNetV1b)    pretrained.conv1, pretrained.bn1
backbone.layerN.*                           pretrained.layerN.* (same block names)
decode_head.pam_in_conv.conv / .bn          head.conv5a.0 / .1
decode_head.pam.query_project               head.sa.query_conv
decode_head.pam.key_project                 head.sa.key_conv
decode_head.pam.value_project               head.sa.value_conv
decode_head.pam.gamma.scale  (shape ())     head.sa.gamma  (shape (1,))
decode_head.pam_out_conv.conv / .bn         head.conv51.0 / .1
decode_head.pam_conv_seg                    head.conv6.1
decode_head.cam_in_conv.conv / .bn          head.conv5c.0 / .1
decode_head.cam.gamma.scale  (shape ())     head.sc.gamma  (shape (1,))
decode_head.cam_out_conv.conv / .bn         head.conv52.0 / .1
decode_head.cam_conv_seg                    head.conv7.1
decode_head.conv_seg                        head.conv8.1
auxiliary_head.convs.0.conv / .bn           auxlayer.conv5.0 / .1
auxiliary_head.conv_seg                     auxlayer.conv5.4
==========================================  ========================================

Facts verified in the publishers' source (read, not copied)
-----------------------------------------------------------
Authors, junfu1115/DANet:

- ``encoding/models/sseg/danet.py``: ``DANet`` = ``BaseNet`` + ``head = DANetHead(2048, nclass)``
  with ``conv5a, conv5c, sa, sc, conv51, conv52, conv6, conv7, conv8`` (conv6/7/8 =
  ``Sequential(Dropout2d(0.1), Conv2d 1×1)``); forward returns (fused, pam, cam), each upsampled
  with ``align_corners=True`` (``up_kwargs`` in ``encoding/models/sseg/base.py``). It takes
  ``aux`` but builds **no** auxiliary head, in the 2018 code (``encoding/models/danet.py``) as in
  the 2020 one, so a DANet checkpoint holds ``pretrained.*`` and ``head.*`` only.
- ``encoding/nn/da_att.py``: ``PAM_Module`` query/key 1×1 C→C/8 and value C→C, all with bias,
  ``gamma`` of shape (1,); ``CAM_Module`` has only ``gamma`` (1,) and uses rowmax(X) − X.
- ``encoding/models/sseg/base.py`` (2020): ``self.pretrained.fc = None``, so no ``fc`` keys; the
  2018 ``encoding/models/base.py`` kept the ImageNet ``fc`` of ``encoding/dilated/resnet.py``, so
  a 2018-era file may hold ``pretrained.fc.weight/bias``: they are ignored and reported.
- ``encoding/models/backbone/resnet.py``: Bottleneck with the stride on the 3×3 conv,
  padding = dilation; ``deep_stem`` (default, ``stem_width=64``) = ``conv1`` Sequential of 3×3
  convs 3→64 (stride 2), 64→64, 64→128 at indices 0, 3, 6 with BN at 1, 4 and ``bn1`` over 128;
  ``no_deepstem`` gives torchvision's 7×7 ``conv1``/``bn1``. ``os=8``: layer3 dilation 2 (first
  block 1), layer4 dilation 4 (first block 2); with ``multi_grid`` layer4's block i has dilation
  ``multi_dilation[i % len]``, i.e. 4, 8, 16. ``avg_down`` is False for ``resnet101``.
- ``experiments/segmentation/test.py`` loads ``checkpoint['state_dict']`` with a strict
  ``load_state_dict`` into that model; README and ``test_danet.sh`` evaluate DANet101.pth.tar with
  ``--backbone resnet101 --multi-grid --multi-dilation 4 8 16 --os 8 --no-deepstem``.

mmsegmentation 1.2.2 (wheel from the package registry):

- ``configs/_base_/models/danet_r50-d8.py``: ``ResNetV1c`` depth 50 (R-101 configs change only
  depth), ``dilations=(1, 1, 2, 4)``, ``strides=(1, 2, 1, 1)``, ``contract_dilation=True``,
  ``style='pytorch'``, no ``multi_grid``; ``DAHead(in_channels=2048, in_index=3, channels=512,
  pam_channels=64, dropout_ratio=0.1, align_corners=False)``; ``FCNHead(in_channels=1024,
  in_index=2, channels=256, num_convs=1, concat_input=False, dropout_ratio=0.1,
  align_corners=False)``, loss weight 0.4. ``configs/danet/*769x769.py`` set both heads'
  ``align_corners=True``.
- ``models/backbones/resnet.py``: ``ResNetV1c`` = ``ResNet(deep_stem=True, avg_down=False)``;
  ``stem`` = conv 3→32 (stride 2), BN, ReLU, conv 32→32, BN, ReLU, conv 32→64, BN, ReLU (indices
  0, 1, 3, 4, 6, 7; ``stem_channels=64``), then max-pool 3/2/1; Bottleneck ``style='pytorch'``
  puts the stride on the 3×3 ``conv2`` (padding = dilation), norms named ``bn1/bn2/bn3``,
  ReLU after the residual sum. Its BasicBlock dilates ``conv1`` only (``conv2`` has padding 1, no
  dilation), unlike ``danet.ResNet``, so mmseg ResNet-18/34 files are refused.
- ``models/utils/res_layer.py``: downsample = ``Sequential(conv 1×1 stride s, BN)`` (indices 0,
  1) without ``avg_down``; with ``contract_dilation`` and dilation d > 1 the first block of the
  stage has dilation d/2: layer3 1, 2, 2…, layer4 2, 4, 4 -- ``danet.ResNet``'s layout.
- ``models/decode_heads/da_head.py``: ``pam_in_conv``, ``pam_out_conv``, ``cam_in_conv``,
  ``cam_out_conv`` are ``ConvModule`` 3×3 (conv without bias as a norm follows, ``bn``, ReLU);
  ``PAM(channels, pam_channels)`` is a ``SelfAttentionBlock`` followed by
  ``gamma(out) + x``; ``CAM`` is rowmax(X) − X, softmax, ``gamma(out) + x``; the three
  classifiers are ``pam_conv_seg``, ``cam_conv_seg`` and the base ``conv_seg`` (1×1 with bias),
  each after the shared ``Dropout2d(0.1)`` (``cls_seg`` in ``decode_head.py``); forward returns
  ``(pam_cam, pam, cam)`` on ``pam_feat + cam_feat`` after the out-convs, and ``predict`` uses
  only the first.
- ``models/utils/self_attention_block.py`` with PAM's arguments (``key_query_norm=False``,
  ``value_out_norm=False``, ``with_out=False``, ``matmul_norm=False``, one conv each): query, key
  and value projections are plain ``nn.Conv2d`` 1×1 with bias (keys ``query_project.weight``, no
  ``.conv``), value C→C; ``sim = softmax(query(B,N,C')·key(B,C',N))`` with no scaling,
  ``context = sim·value(B,N,C)`` — the same as the authors' D·Sᵀ.
- mmcv ``cnn/bricks/scale.py``: ``Scale.scale = nn.Parameter(torch.tensor(0.))``, a 0-dim tensor;
  ``cnn/bricks/conv_module.py``: order conv → norm → act, ``bias='auto'`` (no bias when a norm
  follows), the norm attribute named by ``build_norm_layer`` (``infer_abbr``: ``bn`` for any
  ``_BatchNorm``, SyncBN included), hence ``.conv.weight`` and ``.bn.*`` keys.
- ``segmentors/encoder_decoder.py`` and ``decode_head.predict_by_feat``: the fused logits are
  resized bilinearly to the input with the head's ``align_corners``; the auxiliary head is used
  only in the training loss.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field

import torch

from danet.backbone import ARCHS
from danet.model import DANet, fill_bn_counters, load_state_dict_strict

FORMATS = ("project", "official", "mmseg", "torchvision")

# What the weights cannot tell, per format (overrides win).
_PLAIN = {"dilated": True, "cam_variant": "official"}
FORMAT_DEFAULTS = {
    "project": {"output_stride": 8, "multi_grid": None, "align_corners": True, **_PLAIN},
    "official": {"output_stride": 8, "multi_grid": (4, 8, 16), "align_corners": True, **_PLAIN},
    "mmseg": {"output_stride": 8, "multi_grid": None, "align_corners": False, **_PLAIN},
    "torchvision": {"output_stride": 8, "multi_grid": None, "align_corners": True, **_PLAIN},
}

# What pipeline.train saves beside the weights in each training checkpoint (DANet.settings).
SAVED_SETTINGS = ("output_stride", "multi_grid", "dilated", "cam_variant", "align_corners")

OVERRIDES = ("num_classes", "backbone", "output_stride", "multi_grid", "attention", "cam_variant",
             "align_corners", "dilated", "pam_chunk_size", "pam_impl", "stem", "stem_width", "aux")

# (DANet prefix, mmseg prefix); a key is renamed by the first pair whose prefix it starts with.
_MMSEG_STEM_DEEP = (
    ("pretrained.conv1.0.", "backbone.stem.0."), ("pretrained.conv1.1.", "backbone.stem.1."),
    ("pretrained.conv1.3.", "backbone.stem.3."), ("pretrained.conv1.4.", "backbone.stem.4."),
    ("pretrained.conv1.6.", "backbone.stem.6."), ("pretrained.bn1.", "backbone.stem.7."))
_MMSEG_STEM_PLAIN = (("pretrained.conv1.", "backbone.conv1."), ("pretrained.bn1.", "backbone.bn1."))
_MMSEG_REST = (
    ("pretrained.layer", "backbone.layer"),
    ("head.conv5a.0.", "decode_head.pam_in_conv.conv."), ("head.conv5a.1.", "decode_head.pam_in_conv.bn."),
    ("head.sa.query_conv.", "decode_head.pam.query_project."),
    ("head.sa.key_conv.", "decode_head.pam.key_project."),
    ("head.sa.value_conv.", "decode_head.pam.value_project."),
    ("head.sa.gamma", "decode_head.pam.gamma.scale"),
    ("head.conv51.0.", "decode_head.pam_out_conv.conv."), ("head.conv51.1.", "decode_head.pam_out_conv.bn."),
    ("head.conv6.1.", "decode_head.pam_conv_seg."),
    ("head.conv5c.0.", "decode_head.cam_in_conv.conv."), ("head.conv5c.1.", "decode_head.cam_in_conv.bn."),
    ("head.sc.gamma", "decode_head.cam.gamma.scale"),
    ("head.conv52.0.", "decode_head.cam_out_conv.conv."), ("head.conv52.1.", "decode_head.cam_out_conv.bn."),
    ("head.conv7.1.", "decode_head.cam_conv_seg."),
    ("head.conv8.1.", "decode_head.conv_seg."),
    ("auxlayer.conv5.0.", "auxiliary_head.convs.0.conv."), ("auxlayer.conv5.1.", "auxiliary_head.convs.0.bn."),
    ("auxlayer.conv5.4.", "auxiliary_head.conv_seg."))


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``load_checkpoint`` found and built.

    ``sources`` maps each setting to where it came from: ``"weights"``, ``"override"``,
    ``"meta"`` (the config text saved in an mmseg checkpoint), ``"params.json"`` (the pipeline's
    record beside a project checkpoint), ``"checkpoint"`` (the settings a training checkpoint saved)
    or ``"format default"``.
    ``ignored`` lists the file's keys that were not loaded (named as in the file, after removing
    a ``module.`` prefix); ``filled`` the BatchNorm counters absent from the file, set to 0.
    ``dtype`` is the model's floating dtype (``sources["dtype"]``: ``"weights"`` or ``"argument"``).
    """

    file: str
    format: str
    num_classes: int
    backbone: str
    stem: str
    stem_width: int | None
    multi_grid: tuple | None
    output_stride: int
    align_corners: bool
    attention: str
    aux: bool
    ignored: tuple = ()
    filled: tuple = ()
    prefix_stripped: str = ""
    class_names: tuple | None = None
    sources: dict = field(default_factory=dict)
    dtype: str = "float32"
    dilated: bool = True
    cam_variant: str = "official"


def load_checkpoint(path: str, format: str = "auto", dtype: torch.dtype | None = None,
                    **overrides) -> tuple[DANet, CheckpointInfo]:
    """Build the DANet a checkpoint file describes, load it strictly, return ``(model.eval(), info)``.

    Parameters
    ----------
    path : the file (``model.pt``, ``ckpt_*.pt``, ``DANet101.pth.tar``, an mmseg ``.pth``, a
        torchvision ``resnet*.pth``).
    format : ``"auto"`` or one of :data:`FORMATS` (module docstring).
    dtype : the model's floating dtype. Default: the file's own -- a float64 checkpoint stays float64
        (rounding it to float32 moves the logits of the authors' DANet-101 by 1e-7), a float16 or
        bfloat16 one becomes float32 (exactly), a file mixing float32 and float64 becomes float64.
    overrides : ``DANet`` arguments among :data:`OVERRIDES`; they win over what is read from the
        file and over the format's defaults. ``num_classes`` is required for ``"torchvision"``;
        ``aux=False`` leaves an auxiliary head in the file out (listed as ignored).
    """
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"load_checkpoint: unknown override(s) {unknown}; allowed: {list(OVERRIDES)}")
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"load_checkpoint: format must be 'auto' or one of {FORMATS}, got {format!r}")
    state, container, top, stripped = _read(path, f"checkpoint '{path}' (format '{format}')")
    meta = top.get("meta")
    detected = _detect(state, container)
    fmt = detected if format == "auto" else format
    if fmt is None:
        raise ValueError(f"checkpoint '{path}' (format 'auto'): format not recognised from its keys "
                         f"(top-level prefixes {_prefixes(state)}); expected {_EXPECTED_KEYS}")
    if not _RECOGNISE[fmt](state):
        hint = f"; it looks like format '{detected}'" if detected else ""
        raise ValueError(f"checkpoint '{path}' is not in format '{fmt}': expected {_EXPECTED_KEYS[fmt]}, "
                         f"found top-level prefixes {_prefixes(state)}{hint}")
    where = f"checkpoint '{path}' (format '{fmt}')"
    if fmt == "mmseg":
        where = f"checkpoint '{path}' (format 'mmseg', keys compared under DANet's names)"
    state, ignored = _to_danet_names(state, fmt, drop_aux=overrides.get("aux") is False)
    record = trained_record(path) if fmt == "project" else None
    if record is not None:
        check_record_is_this_file(record, path)
    saved = top.get("settings") if fmt == "project" else None   # a training checkpoint's own (pipeline.train)
    kwargs, sources = _settings(state, fmt, meta, record, saved, overrides, where)
    dtype, sources["dtype"] = (_file_dtype(state), "weights") if dtype is None else (dtype, "argument")

    try:
        model = DANet(**kwargs)
    except ValueError as e:
        raise ValueError(f"{where}: cannot build DANet({_call(kwargs)}): {e}") from None
    model = model.to(dtype)
    filled = fill_bn_counters(model.pretrained, state, "pretrained.") if fmt == "torchvision" \
        else fill_bn_counters(model, state)
    if fmt == "torchvision":
        load_state_dict_strict(model.pretrained, {k.removeprefix("pretrained."): v for k, v in state.items()}, where)
    else:
        load_state_dict_strict(model, state, where)
    info = CheckpointInfo(
        file=str(path), format=fmt, num_classes=kwargs["num_classes"], backbone=kwargs["backbone"],
        stem=kwargs["stem"], stem_width=kwargs["stem_width"], multi_grid=kwargs["multi_grid"],
        output_stride=kwargs["output_stride"], align_corners=kwargs["align_corners"],
        attention=model.head.attention, aux=model.auxlayer is not None, ignored=tuple(ignored),
        filled=tuple(filled), prefix_stripped=stripped, class_names=_class_names(meta) or _class_names(record),
        sources=sources, dtype=str(dtype).removeprefix("torch."), dilated=kwargs["dilated"],
        cam_variant=kwargs["cam_variant"])
    return model.eval(), info


def assumed_settings(info: CheckpointInfo) -> str | None:
    """A one-line warning when a project checkpoint's architecture settings were not found in the file
    nor in a record beside it (nor passed), so the format's defaults were assumed, or when an authors'
    file other than the released DANet-101 got their code's default of no multi-grid; else None."""
    if info.format == "official" and info.backbone != "resnet101" and info.sources["multi_grid"] == "format default":
        return (f"checkpoint '{info.file}' (the authors' format, {info.backbone}): assumed multi_grid=None, their "
                f"code's default; if it was trained with --multi-grid, its outputs are another network's")
    if info.format != "project":
        return None
    assumed = {name: getattr(info, name) for name in ("output_stride", "multi_grid", "dilated", "cam_variant")
               if info.sources.get(name) == "format default"}
    if not assumed:
        return None
    return (f"checkpoint '{info.file}' records no architecture settings (no params.json beside it, none saved "
            f"in it): assumed {_call(assumed)}; if it was trained otherwise, its outputs are another network's")


def backbone_of(path: str) -> str:
    """The :data:`danet.backbone.ARCHS` name of a torchvision ResNet file (``resnet18``…``resnet101``),
    read from its weights as :func:`load_checkpoint` reads them; a file that is not one is refused by name."""
    where = f"pretrained_backbone '{path}'"
    state, container, _, _ = _read(path, where)
    if _detect(state, container) != "torchvision":
        raise ValueError(f"{where}: not a torchvision ResNet state_dict: expected {_EXPECTED_KEYS['torchvision']}, "
                         f"found top-level prefixes {_prefixes(state)}")
    return _infer(_to_danet_names(state, "torchvision", drop_aux=False)[0], "torchvision", where)[0]["backbone"]


def _to_danet_names(state: dict, fmt: str, drop_aux: bool) -> tuple[dict, list]:
    """The file's state under DANet's names, and the file's keys left out (named as in the file)."""
    ignored = []
    if fmt == "mmseg":
        state = from_mmseg_state_dict(state)
    if fmt == "torchvision":
        ignored += [k for k in state if k.startswith("fc.")]
        state = {"pretrained." + k: v for k, v in state.items() if not k.startswith("fc.")}
    if fmt in ("official", "project"):   # ImageNet classifier kept by the authors' 2018 backbone
        ignored += [k for k in state if k.startswith("pretrained.fc.")]
        state = {k: v for k, v in state.items() if not k.startswith("pretrained.fc.")}
    if drop_aux:
        aux_keys = [k for k in state if k.startswith("auxlayer.")]
        ignored += [to_mmseg_key(k) if fmt == "mmseg" else k for k in aux_keys]
        state = {k: v for k, v in state.items() if k not in aux_keys}
    return state, ignored


def _settings(state: dict, fmt: str, meta, record, saved, overrides: dict, where: str) -> tuple[dict, dict]:
    """DANet arguments: read from the weights, else the format's default (or an mmseg file's meta, or a
    project file's ``params.json`` record, or the ``settings`` a training checkpoint saved, which win
    over the record), overridden by ``overrides``; and where each came from."""
    kwargs, sources = _infer(state, fmt, where)
    defaults = dict(FORMAT_DEFAULTS[fmt])
    if fmt == "official" and kwargs["backbone"] != "resnet101":
        defaults["multi_grid"] = None         # the authors' code default; only their DANet-101 file has (4, 8, 16)
    for name, value in defaults.items():
        kwargs[name], sources[name] = value, "format default"
    from_meta = _mmseg_align_corners(meta) if fmt == "mmseg" else None
    if from_meta is not None:
        kwargs["align_corners"], sources["align_corners"] = from_meta, "meta"
    for name, value in _record_settings(record, kwargs, where).items():
        kwargs[name], sources[name] = value, "params.json"
    for name in SAVED_SETTINGS if isinstance(saved, dict) else ():
        if name in saved:
            kwargs[name], sources[name] = saved[name], "checkpoint"
    for name, value in overrides.items():
        kwargs[name], sources[name] = value, "override"
    if fmt == "torchvision" and "num_classes" not in overrides:
        raise ValueError(f"{where}: an ImageNet backbone has no segmentation head; pass num_classes=K")
    if kwargs.get("multi_grid") is not None:
        kwargs["multi_grid"] = tuple(kwargs["multi_grid"])
    return kwargs, sources


# ---------------------------------------------------------------------------------------------
# mmsegmentation names


def _mmseg_pairs(deep_stem: bool):
    return (_MMSEG_STEM_DEEP if deep_stem else _MMSEG_STEM_PLAIN) + _MMSEG_REST


def _rename(key: str, pairs) -> str | None:
    for src, dst in pairs:
        if key.startswith(src):
            return dst + key[len(src):]
    return None


def to_mmseg_key(key: str, deep_stem: bool = True) -> str:
    """The mmseg name of a DANet key (the key itself when it has none)."""
    return _rename(key, _mmseg_pairs(deep_stem)) or key


def to_mmseg_state_dict(state: dict) -> dict:
    """A DANet state_dict (both attention branches) under mmsegmentation's DANet names.

    γ and β become 0-dim tensors (mmcv ``Scale``). Keys with no mmseg counterpart are refused.
    """
    deep = "pretrained.conv1.0.weight" in state
    pairs = _mmseg_pairs(deep)
    out, orphans = {}, []
    for k, v in state.items():
        new = _rename(k, pairs)
        if new is None:
            orphans.append(k)
            continue
        out[new] = v.reshape(()) if new.endswith("gamma.scale") else v
    if orphans:
        raise ValueError(f"to_mmseg_state_dict: no mmseg name for {len(orphans)} keys, e.g. {orphans[:6]}")
    if not ("head.sa.gamma" in state and "head.sc.gamma" in state):
        raise ValueError("to_mmseg_state_dict: mmseg's DAHead has both attention branches (head.sa, head.sc)")
    return out


def from_mmseg_state_dict(state: dict) -> dict:
    """An mmseg DANet state_dict under DANet's names (keys with no DANet name are kept as they are,
    so that a strict load lists them as unexpected). Inverse of :func:`to_mmseg_state_dict`."""
    pairs = [(mm, ours) for ours, mm in _MMSEG_STEM_DEEP + _MMSEG_STEM_PLAIN + _MMSEG_REST]
    out = {}
    for k, v in state.items():
        new = _rename(k, pairs) or k
        out[new] = v.reshape(1) if k.endswith("gamma.scale") and v.dim() == 0 else v
    return out


def _mmseg_align_corners(meta) -> bool | None:
    """``align_corners`` of ``decode_head`` in the config text an mmseg checkpoint keeps in its meta."""
    if not isinstance(meta, dict):
        return None
    text = meta.get("cfg") or meta.get("config")
    if not isinstance(text, str):
        return None
    start = text.find("decode_head")
    if start < 0:
        return None
    end = text.find("auxiliary_head", start)
    m = re.search(r"align_corners['\"]?\s*[=:]\s*(True|False)", text[start:end if end > 0 else None])
    return None if m is None else m.group(1) == "True"


def _class_names(meta) -> tuple | None:
    """The class names an mmseg meta or a pipeline record holds."""
    if not isinstance(meta, dict):
        return None
    names = meta.get("CLASSES") or (meta.get("dataset_meta") or {}).get("classes") or meta.get("class_names")
    return tuple(names) if isinstance(names, (list, tuple)) else None


# ---------------------------------------------------------------------------------------------
# the pipeline's record beside a project checkpoint


def _folders(checkpoint: str) -> list:
    """The checkpoint's folder and, for a symbolic link, its target's: where its record may lie."""
    return list(dict.fromkeys(os.path.dirname(p) for p in (os.path.abspath(checkpoint), os.path.realpath(checkpoint))))


def record_beside(checkpoint: str) -> dict | None:
    """The ``params.json`` beside a checkpoint as a dict -- for ``<model dir>/work/ckpt_*.pt`` the one a
    folder up, where ``pipeline.tasks.TrainedModel`` writes it; for a link, else beside its target --
    or None where there is none."""
    for folder in _folders(checkpoint):
        for candidate in (folder, os.path.dirname(folder)) if os.path.basename(folder) == "work" else (folder,):
            record = _read_record(os.path.join(candidate, "params.json"))
            if record is not False:
                return record
    return None


def _read_record(path: str):
    """The JSON file at ``path`` if it is a dict, None if it is not; False where it cannot be read."""
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False
    return record if isinstance(record, dict) else None


def trained_record(checkpoint: str) -> dict | None:
    """:func:`record_beside` if it is a ``TrainedModel`` record (what trained this file), else None."""
    record = record_beside(checkpoint)
    return record if record is not None and record.get("task") == "TrainedModel" else None


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes, read in blocks (a ResNet-101 ``model.pt`` is ~200 MB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_record_is_this_file(record: dict, checkpoint: str) -> None:
    """Refuse a checkpoint lying beside a ``params.json`` whose ``model_sha256`` is not its own.

    The pipeline records the SHA-256 of the ``model.pt`` it wrote; a file with other bytes in that
    folder (another run's ``model.pt`` copied over it) would otherwise take this run's settings.
    A ``work/ckpt_*.pt`` is not what the record hashes: it carries its own settings. A record
    without the hash (written before it was recorded) cannot be checked. A link is checked against
    the record beside it, else beside its target (:func:`record_beside`)."""
    beside = [os.path.join(f, "params.json") for f in _folders(checkpoint)]
    beside = [path for path in beside if os.path.isfile(path)]
    expected = record.get("model_sha256")
    if expected is None or not beside:
        return
    if file_sha256(checkpoint) != expected:
        raise ValueError(f"checkpoint '{checkpoint}' is not the model.pt that "
                         f"'{beside[0]}' describes (its sha256 differs from the "
                         f"recorded model_sha256): move the file out of that folder and give its settings "
                         f"(load_checkpoint(..., multi_grid=..., output_stride=..., dilated=..., cam_variant=...)), "
                         f"or put it back beside its own params.json")


def _record_settings(record, kwargs: dict, where: str) -> dict:
    """What a ``TrainedModel`` record says of the architecture; refused where it contradicts the weights."""
    if record is None:
        return {}
    preset, params = record.get("preset") or {}, record.get("params") or {}
    said = {"num_classes": record.get("num_classes"), "attention": params.get("attention")}
    wrong = {k: v for k, v in said.items() if v is not None and v != kwargs[k]}
    if wrong:
        raise ValueError(f"{where}: its params.json says {wrong} but the weights have "
                         f"{ {k: kwargs[k] for k in wrong} }: the record is not this file's")
    settings = {k: preset[k] for k in ("output_stride", "multi_grid", "dilated") if k in preset}
    if "cam_variant" in params:
        settings["cam_variant"] = params["cam_variant"]
    return settings


# ---------------------------------------------------------------------------------------------
# reading, recognising, inferring


def _read(path, where):
    """(state_dict, container, the file's top-level dict, stripped prefix) of a checkpoint file; one-line errors."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: {'no such file' if not os.path.exists(path) else 'not a file'}")
    with open(path, "rb") as f:
        head = f.read(8)
    if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):   # torch.save: a zip archive, or a legacy pickle
        raise ValueError(f"{where}: not a checkpoint: torch.save writes a zip archive (or, before torch 1.6, "
                         f"a pickle starting with byte 80); this file starts with bytes {head.hex(' ') or '(empty)'}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # unpickling, zip and weights_only errors have many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{where}: cannot be read by torch.load(weights_only=True): "
                         f"{type(e).__name__}: {first}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: holds a {type(obj).__name__}, expected a dict "
                         f"(a state_dict, or a checkpoint with 'state_dict' or 'model')")
    top, container = obj, "plain"
    for name in ("state_dict", "model"):
        if isinstance(obj.get(name), dict):
            obj, container = obj[name], name
            break
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad or not obj:
        raise ValueError(f"{where}: holds no state_dict: expected a dict of tensors, or one under "
                         f"'state_dict' or 'model'; found keys {[str(k) for k in list(obj)[:8]]}")
    stripped = ""
    if all(k.startswith("module.") for k in obj):
        obj, stripped = {k[len("module."):]: v for k, v in obj.items()}, "module."
    return obj, container, top, stripped


def _has(state, *prefixes) -> bool:
    return all(any(k.startswith(p) for k in state) for p in prefixes)


_RECOGNISE = {
    "project": lambda s: _has(s, "pretrained.", "head."),
    "official": lambda s: _has(s, "pretrained.", "head."),
    "mmseg": lambda s: _has(s, "backbone.", "decode_head."),
    "torchvision": lambda s: "conv1.weight" in s and _has(s, "layer1."),
}
_EXPECTED_KEYS = {
    "project": "keys under 'pretrained.' and 'head.'",
    "official": "keys under 'pretrained.' and 'head.' (in 'state_dict')",
    "mmseg": "keys under 'backbone.' and 'decode_head.'",
    "torchvision": "unprefixed 'conv1.weight' and 'layer1.*' keys",
}


def _detect(state, container) -> str | None:
    if _RECOGNISE["mmseg"](state):
        return "mmseg"
    if _RECOGNISE["project"](state):
        return "official" if container == "state_dict" else "project"
    if _RECOGNISE["torchvision"](state):
        return "torchvision"
    return None


def _prefixes(state) -> list:
    return sorted({k.split(".")[0] + "." for k in state})[:8]


def _infer(state, fmt, where) -> tuple[dict, dict]:
    """DANet arguments read from DANet-named weights, and their sources."""
    p = "pretrained."
    if p + "conv1.weight" in state:
        stem, stem_width = "plain", None
    elif p + "conv1.0.weight" in state:
        stem, stem_width = "deep", int(state[p + "conv1.0.weight"].shape[0])
    else:
        raise ValueError(f"{where}: no stem weights ('conv1.weight' or the deep stem's 'conv1.0.weight')")
    if p + "layer1.0.conv1.weight" not in state:
        raise ValueError(f"{where}: no 'layer1.0.conv1.weight' to read the backbone's width from")
    bottleneck = p + "layer1.0.conv3.weight" in state
    if fmt == "mmseg" and not bottleneck:
        raise ValueError(f"{where}: mmseg's BasicBlock (ResNet-18/34) dilates conv1 only, not conv2 as "
                         f"danet.ResNet does; only ResNet-50/101 mmseg checkpoints are supported")
    blocks = tuple(len({k.split(".")[2] for k in state if k.startswith(f"{p}layer{i}.")}) for i in (1, 2, 3, 4))
    width = int(state[p + "layer1.0.conv1.weight"].shape[0])
    backbone = next((name for name, (block, layers, widths) in ARCHS.items()
                     if (block.expansion == 4) == bottleneck and tuple(layers) == blocks and widths[0] == width),
                    None)
    if backbone is None:
        raise ValueError(f"{where}: no backbone in {sorted(ARCHS)} has {'bottleneck' if bottleneck else 'basic'} "
                         f"blocks {blocks} per stage and layer1 width {width}")
    kwargs = {"backbone": backbone, "stem": stem, "stem_width": stem_width, "aux": _has(state, "auxlayer.")}
    sources = dict.fromkeys(kwargs, "weights")
    if fmt == "torchvision":
        return kwargs, sources
    has = {name: f"head.{name}." for name in ("sa", "sc", "conv5a", "conv8", "conv6", "conv7")}
    has = {name: _has(state, prefix) for name, prefix in has.items()}
    attention = ("both" if has["sa"] and has["sc"] else "pam" if has["sa"] else "cam" if has["sc"]
                 else "none" if has["conv5a"] else None)
    # the class count is what most classifier arrays say, so that one misshapen array is named alone
    votes = Counter(int(state[k].shape[0]) for c in ("conv8", "conv6", "conv7") for k in
                    (f"head.{c}.1.weight", f"head.{c}.1.bias") if k in state and state[k].dim() > 0)
    if attention is None or not votes:
        raise ValueError(f"{where}: no DANet head found (expected 'head.sa', 'head.sc' or 'head.conv5a' and a "
                         f"classifier 'head.conv8/6/7.1.weight')")
    kwargs.update(attention=attention, num_classes=votes.most_common(1)[0][0])
    sources.update(attention="weights", num_classes="weights")
    return kwargs, sources


def _file_dtype(state) -> torch.dtype:
    """The widest floating dtype of the file's tensors, 16-bit ones counted as float32."""
    found = {v.dtype for v in state.values() if v.is_floating_point()}
    return torch.float64 if torch.float64 in found else torch.float32


def _call(kwargs) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
