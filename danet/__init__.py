"""PyTorch DANet (Fu et al., CVPR 2019, arXiv:1809.02983) with the official attribute names."""

from danet.attention import ChannelAttention, PositionAttention
from danet.backbone import ResNet
from danet.checkpoint import CheckpointInfo, load_checkpoint, to_mmseg_state_dict
from danet.export import export_npz, state_dict_to_numpy
from danet.head import DANetHead
from danet.model import DANet, load_state_dict_strict, receptive_field

__all__ = ["PositionAttention", "ChannelAttention", "DANetHead", "DANet", "ResNet",
           "state_dict_to_numpy", "export_npz", "load_state_dict_strict", "receptive_field",
           "load_checkpoint", "CheckpointInfo", "to_mmseg_state_dict"]
