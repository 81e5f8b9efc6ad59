"""Pure-NumPy forward reference of DANet's dual attention (Fu et al., CVPR 2019, arXiv:1809.02983).

This package is the readable specification of the project: it imports NumPy and nothing else.
Every function mirrors a module of the authors' released code (github.com/junfu1115/DANet):

- :func:`softmax`                 -- ``nn.Softmax(dim=-1)``
- :func:`position_attention`      -- ``PAM_Module``  (Sec. 3.2 of the paper)
- :func:`channel_attention`       -- ``CAM_Module``  (Sec. 3.3 of the paper)
- :func:`danet_head`              -- ``DANetHead``   (Sec. 3.4 of the paper)
- :func:`conv2d`, :func:`batch_norm`, :func:`max_pool2d`, :func:`interpolate_bilinear`
                                  -- ``nn.Conv2d``, ``nn.BatchNorm2d`` (eval), ``nn.MaxPool2d``,
                                     ``F.interpolate(mode="bilinear")`` (both ``align_corners``),
                                     all in ``refimpl.layers``, with :func:`check_features`
- :func:`resnet`                  -- the dilated ResNet backbone (``danet.ResNet``)
- :func:`danet_forward`           -- the whole network (``danet.DANet``): image -> (fused, pam, cam)
- :func:`load_npz`, :func:`check_weights` -- weights keyed by the torch ``state_dict`` names.
"""

from refimpl.attention import channel_attention, position_attention, softmax
from refimpl.backbone import resnet, resnet_weight_shapes
from refimpl.head import danet_head, head_weight_shapes
from refimpl.layers import batch_norm, check_features, conv2d, interpolate_bilinear, max_pool2d
from refimpl.network import danet_forward, danet_weight_shapes
from refimpl.weights import WeightError, check_weights, load_npz

__all__ = [
    "softmax",
    "position_attention",
    "channel_attention",
    "danet_head",
    "conv2d",
    "batch_norm",
    "check_features",
    "head_weight_shapes",
    "load_npz",
    "check_weights",
    "WeightError",
    "max_pool2d",
    "interpolate_bilinear",
    "resnet",
    "resnet_weight_shapes",
    "danet_forward",
    "danet_weight_shapes",
]
