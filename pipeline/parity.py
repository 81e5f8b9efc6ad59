"""The NumPy reference checked against a *trained* model, on real backbone features.

γ and β of a trained model are not 0, so the attention modules are not the identity and the
comparison means something (at initialisation it would not). Errors are reported as the largest
absolute difference and the normwise relative error max|ours − torch| / max|torch|.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

import refimpl
from danet.numerics import rel_err
from refimpl.head import head_weight_shapes, sub_weights


def _errors(ours: np.ndarray, theirs: torch.Tensor) -> dict:
    theirs = theirs.detach().cpu().numpy()
    return {"max_abs": float(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max()),
            "max_rel": rel_err(ours, theirs)}


@torch.no_grad()
def reference_check(model, npz_path: str, dataset, cam_variant: str = "official", n_images: int = 2) -> dict:
    """Compare refimpl's PAM, CAM and head with the trained torch head, in float64 and float32."""
    model = model.eval().cpu()
    x = torch.stack([dataset[i][0] for i in range(min(n_images, len(dataset)))])      # (B, 3, H0, W0)
    A = model.features(x)                                                             # (B, C_in, H, W)
    K = model.head.conv6[1].out_channels
    weights32 = refimpl.load_npz(npz_path, expected=head_weight_shapes(A.shape[1], K))
    result = {"images": int(x.shape[0]), "feature_shape": list(A.shape), **model.gammas()}
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        head = copy.deepcopy(model.head).to(dtype).eval()
        w = {k: (v.astype(np.float64) if dtype == torch.float64 and v.dtype.kind == "f" else v)
             for k, v in weights32.items()}
        A_t = A.to(dtype)
        A_np = A_t.numpy()
        feat1, feat2 = head.conv5a(A_t), head.conv5c(A_t)
        pam = _errors(refimpl.position_attention(feat1.numpy(), sub_weights(w, "sa")), head.sa(feat1))
        cam = _errors(refimpl.channel_attention(feat2.numpy(), sub_weights(w, "sc"), variant=cam_variant), head.sc(feat2))
        t0 = time.perf_counter()
        ours = refimpl.danet_head(A_np, w, cam_variant=cam_variant)
        t_np = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = head(A_t)
        t_torch = time.perf_counter() - t0
        result[name] = {"pam": pam, "cam": cam,
                        "head": {k: _errors(o, t) for k, o, t in zip(("fused", "pam", "cam"), ours, theirs)},
                        "seconds": {"numpy_head": round(t_np, 4), "torch_head": round(t_torch, 4)}}
    return result
