"""Weights for the NumPy reference: ``.npz`` files keyed by the torch ``state_dict`` names.

A weight file from the internet is untrusted input: it is read with ``allow_pickle=False`` (an
``.npz`` can otherwise carry pickled Python objects that run code when loaded), and every array is
checked by name and shape before anything uses it.
"""

from __future__ import annotations

import os
import zipfile
from typing import Mapping

import numpy as np


class WeightError(ValueError):
    """A weight mapping or file does not match what the model expects."""


def without_counters(weights: Mapping[str, np.ndarray]) -> dict:
    """The weights without BatchNorm's ``num_batches_tracked`` counters: a torch ``state_dict`` holds
    them, but they never enter an inference forward, so no shape table of ``refimpl`` lists them."""
    return {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}


def check_weights(
    weights: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple],
    *,
    where: str = "weights",
    allow_extra: bool = False,
) -> None:
    """Refuse a missing, extra or misshapen array, naming every one of them.

    Parameters
    ----------
    weights : mapping of name -> ndarray
    expected : mapping of name -> shape tuple
    where : str
        What the weights are (a file name, a module name), used in the message.
    allow_extra : bool
        Accept names that ``expected`` does not list (e.g. BatchNorm's ``num_batches_tracked``).
    """
    problems = []
    for name, shape in expected.items():
        if name not in weights:
            problems.append(f"missing array '{name}' (expected shape {tuple(shape)})")
            continue
        found = np.shape(weights[name])
        if tuple(found) != tuple(shape):
            problems.append(f"array '{name}' has shape {tuple(found)}, expected {tuple(shape)}")
    if not allow_extra:
        for name in weights:
            if name not in expected:
                problems.append(f"unexpected array '{name}' (shape {tuple(np.shape(weights[name]))})")
    if problems:
        raise WeightError(f"{where}: " + "; ".join(problems))


def load_npz(path: str | os.PathLike, expected: Mapping[str, tuple] | None = None) -> dict:
    """Read an ``.npz`` weight file into a plain dict of arrays, never unpickling anything.

    Parameters
    ----------
    path : path of the ``.npz`` file.
    expected : optional mapping name -> shape; when given, :func:`check_weights` runs on the result
        (``num_batches_tracked`` counters are allowed as extras).

    Raises
    ------
    FileNotFoundError : the file does not exist.
    WeightError : the file is not a readable ``.npz``, holds pickled objects, or does not match
        ``expected``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weight file '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise WeightError(f"'{path}' is a single .npy array, expected an .npz archive of named arrays")
            weights = {name: archive[name] for name in archive.files}
    except WeightError:
        raise
    except ValueError as err:  # raised by allow_pickle=False on object arrays
        raise WeightError(f"'{path}' holds pickled Python objects, which are refused: {err}") from err
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise WeightError(f"'{path}' is not a readable .npz archive: {err}") from err
    if expected is not None:
        check_weights(without_counters(weights), expected, where=path)
    return weights
