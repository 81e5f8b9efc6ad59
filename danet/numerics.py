"""How this project compares two computations of the same numbers (NumPy against PyTorch, one
implementation against another): the normwise relative error and the bars it must stay under.

The error is normwise, max|a − b| / max|b|, not elementwise: an elementwise relative error blows
up where b crosses zero, which says nothing about the computation. The bars are those of
``danet check``, the pipeline's ``ReferenceCheck`` and ``CheckpointReport``: 1e-10 in float64
(rounding of a few thousand-term sums; a wrong index or transpose is of order 1) and 1e-4 in
float32 (its 24-bit mantissa through a ResNet-101).
"""

from __future__ import annotations

import numpy as np

TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def rel_err(a, b) -> float:
    """Normwise relative error max|a − b| / max|b| (b the reference; 0 / 0 counts as 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max()) / max(float(np.abs(b).max()), np.finfo(np.float64).tiny)
