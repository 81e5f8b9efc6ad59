"""pipeline.report's story-telling pieces on plain values: the verdict on which module carries the
key, one training time per model, the clustered CAM order and the shared page template."""

import numpy as np

from pipeline.report import (MODELS, UNDEFINED_NOTE, _headline, _per_class_section, carrier,
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


def test_cam_order_is_a_permutation_that_puts_each_planted_block_together():
    """Three planted blocks of similar energy rows, channels shuffled: the order visits every channel once
    and each block in one run (shuffled back would be three runs; the shuffle itself is many)."""
    from danet.attention_maps import cam_order

    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], 5)                                  # 15 channels in 3 groups
    X = np.where(groups[:, None] == groups[None, :], 10.0, 0.0) + rng.normal(0, 0.1, (15, 15))
    X = (X + X.T) / 2
    shuffle = rng.permutation(15)
    assert (np.diff(groups[shuffle]) != 0).sum() > 2                  # the planted blocks are broken up
    order = cam_order(X[np.ix_(shuffle, shuffle)])
    assert sorted(order) == list(range(15))
    seen = groups[shuffle][order]
    assert (np.diff(seen) != 0).sum() == 2, seen                      # three runs: one per group


def test_danet_predict_shows_the_cam_matrix_in_the_reports_clustered_order(monkeypatch):
    """One image through ``danet predict``'s attention figure and through the report's CAM figure (mean
    over that one image): the same matrix in the same channel order, the clustered one (not the
    network's), and both figures say so."""
    import torch

    from danet import DANet, figures
    from danet.classes import palette
    from danet.prediction import predict_image
    from danet.preprocess import normalize
    from pipeline.report import attention_figures
    from tests.test_network_parity import randomise

    torch.manual_seed(0)
    model = randomise(DANet(4, "tiny"), seed=3).eval()
    image = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    shown, draw = [], figures.attention_figure

    def spy(*args, **kwargs):
        fig = draw(*args, **kwargs)
        shown.extend((ax.get_title(), ax.images[0].get_array().data.copy()) for ax in fig.axes
                     if ax.get_title().startswith("CAM attention"))
        return fig

    monkeypatch.setattr(figures, "attention_figure", spy)
    result = predict_image(model, image)
    figures.prediction_pngs(image, result, ["a", "b", "c", "d"], palette("synthetic"))

    class OneImage(list):
        NUM_CLASSES = 4

    _, _, _, cam = attention_figures(model, OneImage([(normalize(image)[0], torch.zeros(40, 48, dtype=torch.long))]),
                                     1, False, "DANet")
    (title_predict, predict), (title_report, report) = shown
    assert "clustered channel order" in title_predict and "clustered channel order" in title_report
    np.testing.assert_allclose(predict, report, rtol=1e-5, atol=1e-7)
    order = result["cam_order"]
    assert sorted(order) == list(range(len(cam))) and list(order) != list(range(len(cam)))
    np.testing.assert_allclose(predict, result["cam"][np.ix_(order, order)], rtol=1e-6)
    assert not np.allclose(predict, result["cam"], rtol=1e-3)         # not the network's order


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
