"""Shared test helpers: Hypothesis profiles and named-intermediate comparison."""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


from danet.numerics import rel_err  # noqa: E402 -- the project's one definition, re-exported for the tests


def assert_named_close(ours: dict, theirs: dict, rtol: float, order=None):
    """Compare intermediates in computation order; the message names the first step that diverged."""
    for name in order or theirs:
        a = ours[name]
        b = theirs[name].detach().cpu().numpy() if isinstance(theirs[name], torch.Tensor) else theirs[name]
        assert a.shape == b.shape, f"step '{name}': shape {a.shape} vs torch {b.shape}"
        err = rel_err(a, b)
        assert err <= rtol, f"first diverging step '{name}': relative error {err:.3e} > {rtol:.0e}"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def pipeline_root(tmp_path):
    """A fresh artifact root ``tmp_path/A`` for the Luigi tasks of one test (progress bars off)."""
    import luigi

    config = luigi.configuration.get_config()
    config.set("pipeline", "root", str(tmp_path / "A"))
    config.set("pipeline", "progress", "false")
    yield tmp_path / "A"
    config.set("pipeline", "root", "artifacts")
