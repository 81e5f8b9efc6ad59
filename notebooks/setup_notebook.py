"""The set-up that opens every notebook in this folder, written once.

Each notebook's first code cell runs it with ``%run setup_notebook.py`` (a notebook's kernel starts
in the notebook's folder, under ``pytest --nbval`` as in JupyterLab) and then has these names:

    np, torch, plt      NumPy, PyTorch and matplotlib.pyplot
    refimpl, danet      this checkout's NumPy reference and PyTorch model
    rng                 np.random.default_rng(0): the same random numbers on every run
    rel_err             danet.numerics.rel_err, the normwise relative error max|a − b| / max|b|

It also keeps a run's outputs the same from one run to the next, so that nbval can compare them
with the committed ones: warnings (and matplotlib's font-cache notice) are silenced, since a
library warning on stderr would be an output the committed run did not have; figures are drawn
inline at 72 dpi (small PNGs keep the notebooks small); torch uses one thread.

``%run`` rather than ``import``: re-running the first cell re-seeds ``rng``, as the cell it replaces did.
"""

import logging
import sys
import warnings
from pathlib import Path

from IPython import get_ipython

warnings.simplefilter("ignore")
logging.getLogger("matplotlib").setLevel(logging.ERROR)

if get_ipython() is not None:                      # in a notebook: `%matplotlib inline`
    get_ipython().run_line_magic("matplotlib", "inline")
import matplotlib.pyplot as plt                    # after the warnings are silenced
import numpy as np
import torch

try:
    import refimpl
except ImportError:  # the checkout is not installed: use the repository this folder lives in
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import refimpl
import danet
from danet.numerics import rel_err

plt.rcParams.update({"figure.dpi": 72, "font.size": 9})   # small PNGs keep the notebooks small
torch.set_num_threads(1)   # one thread: the fastest for these small models when the cores are shared
rng = np.random.default_rng(0)
