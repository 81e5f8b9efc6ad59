"""The NumPy-vs-PyTorch check of the whole network, stage by stage (``danet check``): the
``refimpl.danet_forward`` arguments that describe a torch model, the torch model's stages caught by
forward hooks under refimpl's stage names, and their normwise errors
(:func:`danet.numerics.rel_err`) against the bars of :data:`danet.numerics.TOLERANCE`.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from danet.numerics import TOLERANCE, rel_err
from danet.preprocess import normalize


def architecture(model, info) -> dict:
    """The ``refimpl.danet_forward`` arguments that make it the same network as ``model``."""
    return {"backbone": info.backbone, "stem": info.stem, "stem_width": info.stem_width,
            "output_stride": info.output_stride, "multi_grid": info.multi_grid, "dilated": info.dilated,
            "align_corners": model.align_corners, "cam_variant": model.head.sc.variant}


@torch.no_grad()
def torch_stages(model, x: torch.Tensor) -> dict:
    """The stages of one ``DANet.forward``, caught by forward hooks, named as ``refimpl.danet_forward`` names them."""
    bb, head, st, hooks = model.pretrained, model.head, {}, []

    def catch(module, name):
        hooks.append(module.register_forward_hook(lambda m, i, out: st.__setitem__(name, out.clone())))

    catch(bb.relu, "stem")                                             # ResNet.relu is the stem's ReLU only
    catch(bb.maxpool, "maxpool")
    for i in range(1, 5):
        for j, block in enumerate(getattr(bb, f"layer{i}")):
            catch(block, f"layer{i}.{j}")
        catch(getattr(bb, f"layer{i}"), f"layer{i}")
    for name in ("conv5a:feat1", "sa:sa_feat", "conv51:sa_conv", "conv5c:feat2", "sc:sc_feat", "conv52:sc_conv"):
        attr, name = name.split(":")
        catch(getattr(head, attr), name)

    def head_done(module, inputs, out):                                # stages in forward order, as refimpl's
        st["feat_sum"] = st["sa_conv"] + st["sc_conv"]                 # the input of conv8
        st.update(zip(("fused_lowres", "pam_lowres", "cam_lowres"), out))

    hooks.append(head.register_forward_hook(head_done))
    try:
        outputs = model(x)
    finally:
        for h in hooks:
            h.remove()
    st.update(zip(("fused", "pam", "cam"), outputs))
    return st


def check(model, info, image: np.ndarray, dtype: str = "float64") -> dict:
    """``refimpl.danet_forward`` against the PyTorch model on one uint8 image, stage by stage.

    Returns ``{"dtype", "image_size", "stages": {stage: max rel error}, "overall_max_rel_error",
    "first_stage_over_1e-10", "seconds": {"numpy", "torch"}}``; errors are normwise,
    max|NumPy − torch| / max|torch|, in the stage order of ``danet_forward``.
    """
    import refimpl
    from danet.export import state_dict_to_numpy

    if info.attention != "both":
        raise ValueError(f"checkpoint '{info.file}': check needs both attention modules (the whole DANet), "
                         f"this one has attention={info.attention!r}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    twin = copy.deepcopy(model).to(getattr(torch, dtype)).eval()
    x = normalize(image, getattr(torch, dtype))                        # (1, 3, H0, W0)
    weights = {k: v for k, v in state_dict_to_numpy(twin).items() if not k.startswith("auxlayer.")}
    t0 = time.perf_counter()
    *_, ours = refimpl.danet_forward(x.numpy(), weights, return_stages=True, **architecture(model, info))
    t_numpy = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = torch_stages(twin, x)
    t_torch = time.perf_counter() - t0
    missing = sorted(set(ours) ^ set(theirs))
    if missing:
        raise RuntimeError(f"check: NumPy and torch name different stages: {missing}")
    stages = {name: rel_err(ours[name], theirs[name].numpy()) for name in ours}
    return {"dtype": dtype, "image_size": list(image.shape[:2]), "stages": stages,
            "overall_max_rel_error": max(stages.values()),
            "first_stage_over_1e-10": next((n for n, e in stages.items() if e > TOLERANCE["float64"]), None),
            "seconds": {"numpy": round(t_numpy, 3), "torch": round(t_torch, 3)}}
