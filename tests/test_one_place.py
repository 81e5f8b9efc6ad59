"""One place per idea (issue 18, part 3): lists in help texts are derived from their registries, a
new Luigi task needs no second edit, and the shared definitions are the ones everybody uses."""

import contextlib
import io

import luigi
import numpy as np
import torch

import pipeline
from danet.classes import CLASS_NAMES
from pipeline import tasks
from pipeline.datasets import DATASETS
from pipeline.presets import PRESETS


def test_help_texts_list_every_registered_name():
    assert "synthetic" in DATASETS                        # one registry, the built-in dataset included
    for name in DATASETS:
        assert name in tasks.PreparedDataset.dataset.description
    for name in PRESETS:                                  # camvid was missing when the list was typed
        assert name in tasks.PreparedDataset.preset.description
    for name in CLASS_NAMES:
        assert name in tasks.CheckpointReport.classes.description
    from pipeline.distributed import parse_args

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        parse_args(["--help"])
    for name in DATASETS:                                # voc2012aug was missing
        assert name in " ".join(out.getvalue().split()), name


def test_a_new_task_needs_no_edit_in_the_package_init(monkeypatch):
    class BrandNew(luigi.Task):
        pass

    monkeypatch.setattr(tasks, "BrandNew", BrandNew, raising=False)
    assert pipeline.BrandNew is BrandNew
    for name, obj in vars(tasks).items():
        if isinstance(obj, type) and issubclass(obj, luigi.Task) and obj.__module__ == tasks.__name__ \
                and not name.startswith("_"):
            assert getattr(pipeline, name) is obj


def test_the_shared_definitions_are_used_everywhere():
    from danet import cli, network_check, numerics, prediction, preprocess
    from pipeline import checkpoint_report, datasets
    from tests import conftest

    assert cli.TOLERANCE is numerics.TOLERANCE and checkpoint_report.BARS is numerics.TOLERANCE
    assert network_check.rel_err is numerics.rel_err is conftest.rel_err
    assert datasets.IMAGENET_MEAN is preprocess.IMAGENET_MEAN \
        and network_check.normalize is prediction.normalize is preprocess.normalize
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = (image / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]          # (H, W, 3)
    assert torch.equal(datasets.normalize(image), preprocess.normalize(image)[0])
    np.testing.assert_allclose(preprocess.normalize(image, torch.float64)[0].permute(1, 2, 0).numpy(),
                               expected, rtol=0, atol=1e-6)   # the constants are float32


def test_architecture_tables_are_stated_once():
    """refimpl states the tables (backbones, stems, stride/dilation plan, CAM variants); danet reads
    them and keeps its own torch forward, so the parity tests still compare two computations."""
    import refimpl.attention
    import refimpl.backbone
    from danet import attention, backbone

    assert attention.CAM_VARIANTS is refimpl.attention.CAM_VARIANTS and backbone.STEMS is refimpl.backbone.STEMS
    assert {n: (b.__name__, l, w) for n, (b, l, w) in backbone.ARCHS.items()} == {
        n: ({"basic": "BasicBlock", "bottleneck": "Bottleneck"}[k], l, w) for n, (k, l, w) in refimpl.backbone.ARCHS.items()}
    net = backbone.ResNet("resnet50", output_stride=16, multi_grid=None)
    plan = refimpl.backbone.stage_plan(refimpl.backbone.ARCHS["resnet50"][1], 16)
    for i, (stride, dilations) in enumerate(plan):
        layer = getattr(net, f"layer{i + 1}")
        assert [blk.conv2.dilation[0] for blk in layer] == dilations and layer[0].conv2.stride[0] == stride
