"""pipeline.report's story-telling pieces on plain values: the verdict on which module carries the
key, one training time per model, the clustered CAM order and the shared page template."""

import numpy as np

from pipeline.report import (MODELS, UNDEFINED_NOTE, _headline, _per_class_section, cam_order, carrier,
                             class_order, html_page, training_seconds)


def ctx(keyed=("red-keyed shape", "blue-keyed shape")):
    names = ["background", "red-keyed shape", "blue-keyed shape", "key"]
    return {"keyed": list(keyed), "names": names}


def iou(red, blue, background=0.9, key=0.95):
    return {"background": background, "red-keyed shape": red, "blue-keyed shape": blue, "key": key}


def test_carrier_is_the_module_whose_knock_out_costs_the_keyed_iou():
    knocked = {"full": iou(0.9, 0.9), "pam_off": iou(0.88, 0.9), "cam_off": iou(0.4, 0.5)}
    who, m = carrier(ctx(), knocked)
    assert who == "CAM" and m["full"] == 0.9 and m["cam_off"] == 0.45
    knocked = {"full": iou(0.9, 0.9), "pam_off": iou(0.3, 0.3), "cam_off": iou(0.89, 0.9)}
    assert carrier(ctx(), knocked)[0] == "PAM"
    knocked = {"full": iou(0.9, 0.9), "pam_off": iou(0.5, 0.5), "cam_off": iou(0.6, 0.6)}
    assert carrier(ctx(), knocked)[0] == "both"
    knocked = {"full": iou(0.9, 0.9), "pam_off": iou(0.9, 0.89), "cam_off": iou(0.89, 0.9)}
    assert carrier(ctx(), knocked)[0] == "neither"
    # a real dataset has no keyed classes: the measure is the mIoU over every class
    knocked = {"full": iou(0.9, 0.9), "pam_off": iou(0.9, 0.9, key=0.1), "cam_off": iou(0.9, 0.9)}
    who, m = carrier(ctx(keyed=()), knocked)
    assert who == "PAM" and abs(m["pam_off"] - (0.9 + 0.9 + 0.9 + 0.1) / 4) < 1e-12


def test_keyed_classes_come_first():
    assert class_order(ctx()) == ["red-keyed shape", "blue-keyed shape", "background", "key"]
    assert class_order(ctx(keyed=())) == ["background", "red-keyed shape", "blue-keyed shape", "key"]


def test_training_time_is_the_trainers_clock_over_resumes():
    """After a resume the task's own seconds count only its last run; the trainer's summary counts all."""
    assert training_seconds({"seconds": 40.4, "train": {"seconds": 508.8}}) == 508.8
    assert training_seconds({"seconds": 40.4, "train": {}}) == 40.4


def test_cam_order_puts_each_block_of_similar_channels_together():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], 5)                                  # 15 channels in 3 groups
    X = np.where(groups[:, None] == groups[None, :], 10.0, 0.0) + rng.normal(0, 0.1, (15, 15))
    X = (X + X.T) / 2
    shuffle = rng.permutation(15)
    order = cam_order(X[np.ix_(shuffle, shuffle)])
    assert sorted(order) == list(range(15))
    seen = groups[shuffle][order]
    assert (np.diff(seen) != 0).sum() == 2, seen                      # three runs: one per group


def test_page_template_is_self_contained():
    page = html_page("T <x>", "<p>intro</p>", [("One & two", "<p>body</p>")])
    assert page.startswith("<!DOCTYPE html>") and "<title>T &lt;x&gt;</title>" in page
    assert "<h2>One &amp; two</h2><p>body</p>" in page and "http" not in page


def test_a_class_absent_from_val_is_undefined_not_zero():
    """A keyed class that occurs neither in the labels nor in the predictions (the smoke preset's four
    val images hold no red-keyed shape) has no IoU: the headline says –, not 0.00, and the table
    explains its –."""
    c = {**ctx(), "k": 4, "eval_both": {"confusion": np.diag([50, 0, 5, 3]).tolist()}}
    ablation = {a: {"miou": 0.5, "pixel_accuracy": 0.9, "per_class_iou": iou(None, 0.25)} for a in MODELS}
    assert "FCN – / 0.25, DANet – / 0.25" in _headline(c, ablation)
    assert UNDEFINED_NOTE in _per_class_section(c, ablation)
    ablation = {a: {"miou": 0.5, "pixel_accuracy": 0.9, "per_class_iou": iou(0.5, 0.25)} for a in MODELS}
    assert "FCN 0.50 / 0.25" in _headline(c, ablation)
    assert UNDEFINED_NOTE not in _per_class_section(c, ablation)


def test_a_knock_out_that_changes_nothing_costs_0_00_not_minus():
    from pipeline.report import _cost

    assert _cost(-0.0004) == "0.00" and _cost(0.714) == "0.71" and _cost(-0.3) == "-0.30"
