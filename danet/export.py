"""The bridge from PyTorch to the NumPy reference: state_dicts as NumPy arrays and ``.npz`` files."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
from torch import nn


def state_dict_to_numpy(module: nn.Module, dtype=None) -> dict:
    """The module's ``state_dict`` as ``{name: ndarray}`` (copies, on the CPU).

    ``dtype`` converts floating arrays (e.g. ``np.float64`` for a tight parity check); integer
    buffers such as BatchNorm's ``num_batches_tracked`` keep their type. NumPy has no bfloat16: a
    bfloat16 tensor becomes float32, which holds each of its values exactly.
    """
    out = {}
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        array = tensor.numpy().copy()
        if dtype is not None and np.issubdtype(array.dtype, np.floating):
            array = array.astype(dtype)
        out[name] = array
    return out


def export_npz(module: nn.Module, path: str | os.PathLike, dtype=None) -> str:
    """Write the module's ``state_dict`` to ``path`` as an ``.npz``, atomically.

    The file is written under a temporary name in the same directory and renamed into place,
    so a crash never leaves a half-written ``.npz`` at ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **state_dict_to_numpy(module, dtype))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
