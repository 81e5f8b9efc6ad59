"""Artifacts on disk: where each one lives, how it is written, and the record kept beside it.

Every pipeline output lives under one root, at a path that encodes the parameters that change it
and ``CODE_VERSION`` (bumped when a change of code changes results), so a stale artifact is never
silently reused. Every write goes through :func:`atomic_path` -- a temporary name in the same
directory, renamed into place once complete -- so a crash never leaves an output that looks
complete. This module knows nothing of Luigi: training processes started by torchrun use it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
from importlib import metadata

import numpy as np
import torch

CODE_VERSION = "v2"   # v2: the built-in data's min_distance 220 -> 224


# --------------------------------------------------------------------------- paths

def data_dir(root: str, dataset: str, preset: str) -> str:
    """``<root>/<v>/data/<dataset>`` (the built-in dataset's size depends on the preset: ``synthetic-<preset>``)."""
    name = f"{dataset}-{preset}" if dataset == "synthetic" else dataset
    return os.path.join(root, CODE_VERSION, "data", name)


def seed_dir(root: str, dataset: str, preset: str, seed: int) -> str:
    """``<root>/<v>/runs/<dataset>/<preset>/seed<k>``: the models of one ablation, and its summary."""
    return os.path.join(root, CODE_VERSION, "runs", dataset, preset, f"seed{seed}")


def model_dir(root: str, dataset: str, preset: str, seed: int, attention: str, cam_variant: str) -> str:
    """``…/seed<k>/<attention>-<cam_variant>``: one trained model and everything computed from it."""
    return os.path.join(seed_dir(root, dataset, preset, seed), f"{attention}-{cam_variant}")


def report_dir(root: str, dataset: str, preset: str, seed: int) -> str:
    return os.path.join(root, CODE_VERSION, "reports", f"{dataset}-{preset}-seed{seed}")


# --------------------------------------------------------------------------- atomic writes

@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on failure removed.

    The caller writes a file (or creates a directory) at the yielded path with any library. A
    directory replaces an existing one at ``path``. The rename is atomic on one filesystem, so
    readers see either the old artifact, or none, or the complete new one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
        if os.path.isdir(tmp) and os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)


TMP_MARK = ".tmp-"   # atomic_path's temporaries: .<name>.tmp-<pid>


def remove_stale_temporaries(directory: str) -> list[str]:
    """Remove the temporaries of :func:`atomic_path` under ``directory`` (recursively) whose writer is
    dead -- a ``kill -9`` during a write leaves ``.ckpt_000400.pt.tmp-<pid>`` behind -- and return them.
    One whose process still runs (this one included) is kept: it may be being written."""
    removed = []
    for parent, dirs, files in os.walk(directory):
        for name in dirs + files:
            pid = name.rpartition(TMP_MARK)[2]
            if name.startswith(".") and TMP_MARK in name and pid.isdigit() and not _alive(int(pid)):
                path = os.path.join(parent, name)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
                removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:    # another user's process
        return True
    return True


def write_json(path: str, obj) -> None:
    """Write ``obj`` as indented JSON, atomically (NumPy scalars and arrays become numbers and lists)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path) -> dict:
    """Read a JSON artifact; ``path`` may be a string, a Path or anything with ``.path`` (a Luigi target)."""
    with open(getattr(path, "path", path)) as f:
        return json.load(f)


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------- the record beside each artifact

def environment() -> dict:
    """Versions and the device: what a result depends on besides its parameters."""
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "luigi": _version("luigi"), "platform": platform.platform(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)",
            "torch_threads": torch.get_num_threads()}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------- one writer per artifact

@contextlib.contextmanager
def exclusive_lock(root: str, name: str):
    """Hold an exclusive file lock ``<root>/<v>/.locks/<name>.lock`` for the block (blocks until free).

    Two pipelines started at once on one root then build each artifact once: the second waits,
    and finds the artifact complete when it gets the lock.
    """
    lock_dir = os.path.join(root, CODE_VERSION, ".locks")
    os.makedirs(lock_dir, exist_ok=True)
    with open(os.path.join(lock_dir, f"{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
