"""Luigi pipeline: data -> training -> evaluation -> NumPy export -> reference check -> ablation -> report.

Run it with ``luigi --module pipeline FullReport`` (``make report``). Modules, one way round:

- ``tasks``      the task graph (Luigi): one task per artifact, requires -> output -> run
- ``command_line``  one-line parameter errors and the result's path, under ``luigi`` only
- ``artifacts``  paths, atomic writes, JSON, the environment record, the task lock
- ``build``      datasets on disk, Dataset objects, models and checkpoints
- ``train``, ``evaluate``, ``parity``, ``knockout``, ``report``, ``checkpoint_report``   the work itself, on plain values
- ``distributed``  data-parallel training processes (torchrun); ``datasets`` (a package: one module
  per dataset family, and the registry of every name), ``download``,
  ``synthetic``, ``presets``  the data and the recipes; ``device_data``  the training set held and
  augmented on the GPU; ``pack_camvid``  CamVid packed to travel (``python -m pipeline.pack_camvid``)

Only ``tasks`` imports Luigi (and ``command_line``, what its command line prints around the work). It is imported here when Luigi is already loaded -- as under
``luigi --module pipeline``, which needs the task classes registered -- and on first access to a
task name otherwise, so ``python -m pipeline.distributed`` and the library modules never load it.
"""

import sys


def __getattr__(name):
    """``pipeline.<Task>``: any class of ``pipeline.tasks``, found there (a new task needs no edit
    here). Only capitalised names are looked up, so ``from pipeline import train`` never loads Luigi."""
    if name[:1].isupper():
        from pipeline import tasks

        if isinstance(getattr(tasks, name, None), type):
            return getattr(tasks, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


if "luigi" in sys.modules:
    from pipeline import tasks  # noqa: F401 -- registers the tasks with Luigi
