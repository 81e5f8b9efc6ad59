"""Plausible numbers that were wrong: each case here is compared with an independent computation
(a confusion matrix counted by hand, the network the checkpoint was trained as, a float64
recomputation), and each failed on the code before its fix (the second round after
``test_silent_errors.py``; docs/refusals.md lists the refusals).
"""

import numpy as np
import pytest
import torch

from danet.prediction import predict_probs
from pipeline.evaluate import confusion_matrix, metrics_from_confusion


# --------------------------------------------------------------------------- evaluation


def test_a_prediction_outside_the_classes_is_refused_not_counted_as_the_next_class():
    # a 4-class model scored on a 3-class dataset: prediction 3 of a true-0 pixel used to land in
    # cell (1, 0), "true 1 predicted 0" -- a count in a row of a class the pixel does not have
    pred, target = np.array([3, 0, 1]), np.array([0, 1, 1])
    with pytest.raises(ValueError, match=r"prediction values \[3\] outside \[0, 3\)"):
        confusion_matrix(pred, target, 3)


def test_a_prediction_and_a_label_of_different_shapes_are_refused():
    # the same number of pixels, but transposed: flattened, every pixel met another's label
    pred = np.array([[0, 1, 2], [0, 1, 2]])                              # (2, 3)
    target = np.array([[0, 1], [2, 0], [1, 2]])                          # (3, 2)
    with pytest.raises(ValueError, match=r"prediction of shape \(2, 3\) and label of shape \(3, 2\)"):
        confusion_matrix(pred, target, 3)


def test_the_confusion_matrix_is_the_hand_count_and_holds_more_than_int32():
    pred = np.array([[0, 2, 1], [1, 1, 0]])
    target = np.array([[0, 2, 255], [1, 0, 0]])
    by_hand = np.zeros((3, 3), np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != 255:
            by_hand[t, p] += 1
    conf = confusion_matrix(pred, target, 3)
    assert conf.dtype == np.int64 and (conf == by_hand).all()
    big = conf * 2**31                                                   # a Cityscapes-sized total, past int32
    m = metrics_from_confusion(big)
    assert m["per_class_iou"]["0"] == pytest.approx(2 / 3) and m["pixel_accuracy"] == pytest.approx(4 / 5)


def test_sliding_windows_that_leave_gaps_are_refused():
    # stride 24 > crop 16 left rows 16..23 in no window: 0/0 = NaN probabilities, argmax class 0
    def model(x):
        return (torch.zeros(x.shape[0], 2, *x.shape[2:]),)

    x = torch.zeros(1, 3, 40, 40)
    with pytest.raises(ValueError, match="stride 24 .* crop 16"):
        predict_probs(model, x, "sliding", crop=16, stride=24)
