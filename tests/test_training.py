"""Training: determinism on the CPU, resumption, logs; evaluation metrics; the built-in dataset."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from danet import DANet, receptive_field
from pipeline import synthetic
from pipeline.evaluate import confusion_matrix, metrics_from_confusion, predict_probs
from pipeline.presets import PRESETS, get_preset
from pipeline.train import batch_plan, latest_checkpoint, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("keyed")
    synthetic.generate(str(root), n_train=6, n_val=2, seed=3)
    return synthetic.KeyedShapes(root, "train")


def _train(data, out, seed=0, **kw):
    torch.manual_seed(seed)
    model = DANet(4, "tiny")
    preset = dataclasses.replace(PRESETS["smoke"], iterations=6, checkpoint_every=2)
    summary = train(model, data, preset, str(out), seed=seed, progress=False, **kw)
    return model, summary


def test_resumed_training_equals_uninterrupted(tiny_data, tmp_path):
    straight, _ = _train(tiny_data, tmp_path / "a")
    _, first = _train(tiny_data, tmp_path / "b", stop_after=3)      # stops after iteration 3 ...
    assert first["iterations"] == 3 and not first["finished"]
    resumed, second = _train(tiny_data, tmp_path / "b")             # ... fresh model, resumes from ckpt 2
    assert second["finished"]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{k} differs after resume"
    log = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == list(range(1, 7))


def test_truncated_checkpoint_falls_back_to_previous(tiny_data, tmp_path):
    _train(tiny_data, tmp_path, stop_after=4)
    newest = sorted(tmp_path.glob("ckpt_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    path, state = latest_checkpoint(str(tmp_path))
    assert state["iteration"] == 2 and path.endswith("ckpt_000002.pt")


def test_batch_plan_is_a_function_of_seed_and_iteration():
    whole = list(batch_plan(10, 4, seed=5, start=0, stop=6))
    assert list(batch_plan(10, 4, seed=5, start=3, stop=6)) == whole[3:]
    assert list(batch_plan(10, 4, seed=6, start=0, stop=6)) != whole
    first_epoch = [i for b in whole for i, _ in b][:10]
    assert sorted(first_epoch) == list(range(10))


def test_confusion_and_metrics():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    conf = confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    m = metrics_from_confusion(conf, ["a", "b", "c"])
    assert m["per_class_iou"] == {"a": 0.5, "b": 2 / 3, "c": 1.0}
    assert m["miou"] == pytest.approx((0.5 + 2 / 3 + 1) / 3) and m["pixel_accuracy"] == pytest.approx(0.8)


def test_sliding_window_and_flip_consistent_with_whole():
    torch.manual_seed(0)
    model = DANet(3, "tiny", attention="none").eval()
    x = torch.randn(1, 3, 48, 64)
    whole = predict_probs(model, x)
    one_window = predict_probs(model, x, mode="sliding", crop=64, stride=32)  # one padded window
    assert torch.allclose(one_window[..., :48, :64], predict_probs(model, torch.nn.functional.pad(x, (0, 0, 0, 16)))[..., :48, :], atol=1e-6)
    flipped = predict_probs(model, x, flip=True)
    assert flipped.shape == whole.shape and torch.allclose(flipped.sum(1), torch.ones(1, 48, 64), atol=1e-5)
    ms = predict_probs(model, x, scales=(0.75, 1.0))
    assert ms.shape == whole.shape
    with pytest.raises(ValueError, match="eval_crop and eval_stride"):
        predict_probs(model, x, mode="sliding")


def test_synthetic_is_deterministic_and_keeps_the_key_out_of_reach(tmp_path):
    a = synthetic.render_scene(np.random.default_rng(1))
    b = synthetic.render_scene(np.random.default_rng(1))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    preset = get_preset("cpu")
    model = DANet(4, preset.backbone, dilated=preset.dilated, attention="none")
    rf = receptive_field(model)["receptive_field"]
    rng = np.random.default_rng(0)
    for _ in range(50):
        _, label = synthetic.render_scene(rng, **{k: v for k, v in {**synthetic.SCENE_DEFAULTS, **preset.synthetic}.items() if k in synthetic.SCENE_DEFAULTS})
        key_x = np.nonzero(label == 3)[1]
        shape_x = np.nonzero(np.isin(label, [1, 2]))[1]
        assert len(key_x) and len(shape_x)
        gap = min(abs(shape_x.min() - key_x.max()), abs(key_x.min() - shape_x.max()))
        assert gap > rf / 2, f"a shape pixel is within half the receptive field ({rf / 2}) of the key"


def test_receptive_field_matches_gradient_extent():
    model = DANet(2, "tiny", attention="none").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    x = torch.rand(1, 3, 16, 1024, requires_grad=True)
    model(x)[0][0, 0, 8, 512].backward()
    cols = torch.nonzero(x.grad.abs().sum((0, 1, 2)) > 0).flatten()
    assert int(cols.max() - cols.min() + 1) == receptive_field(model)["receptive_field"]


def test_non_finite_loss_stops_with_the_iteration(tiny_data, tmp_path):
    torch.manual_seed(0)
    model = DANet(4, "tiny")
    with torch.no_grad():
        model.head.conv8[1].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="at iteration 1"):
        train(model, tiny_data, PRESETS["smoke"], str(tmp_path), progress=False)


def test_duration_estimate_progress_callback_and_tensorboard(tiny_data, tmp_path, capsys):
    calls = []
    _train(tiny_data, tmp_path / "quiet", on_progress=lambda *a: None)
    assert "s/it (measured)" not in capsys.readouterr().err, "progress=False prints nothing"
    torch.manual_seed(0)
    train(DANet(4, "tiny"), tiny_data, dataclasses.replace(PRESETS["smoke"], iterations=6, checkpoint_every=2),
          str(tmp_path / "run"), progress=True, on_progress=lambda *a: calls.append(a))
    err = capsys.readouterr().err
    assert "training smoke: 6 iterations at" in err and "s/it (measured) -> about" in err
    assert [c[0] for c in calls] == list(range(1, 7)) and all(c[1] == 6 for c in calls)   # log_every 1
    assert calls[-1][3] == 0 and all(np.isfinite(c[2]) and c[3] >= 0 for c in calls)     # ETA 0 at the end
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"loss/total", "loss/fused", "lr", "attention/gamma_pam"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss/total")] == list(range(1, 7))


class _Labels:
    """A dataset of label maps only, as ``class_weights`` reads one (``samples``, ``map_label``)."""
    NUM_CLASSES = 4
    split = "train"

    def __init__(self, tmp_path, labels):
        from PIL import Image

        self.samples = []
        for i, label in enumerate(labels):
            Image.fromarray(np.asarray(label, np.uint8)).save(tmp_path / f"{i}.png")
            self.samples.append((None, tmp_path / f"{i}.png"))

    def map_label(self, raw):
        return raw.astype(np.int64)


def test_class_weights_are_median_frequency_balancing(tmp_path):
    from pipeline.train import class_weights

    a = np.array([[0, 0, 0, 1], [0, 0, 255, 2]])        # 8 pixels: class 0 x5, 1 x1, 2 x1, one ignored
    b = np.array([[0, 2, 2, 2], [2, 2, 2, 255]])        # class 0 x1, 2 x6
    data = _Labels(tmp_path, [a, b])
    # f_k = pixels of k / pixels of the images holding k: f0 = 6/16, f1 = 1/8, f2 = 7/16; class 3 absent
    f = np.array([6 / 16, 1 / 8, 7 / 16])
    median = 6 / 16
    np.testing.assert_allclose(class_weights(data, 1.0), [*(median / f), 0.0], rtol=1e-12)
    np.testing.assert_allclose(class_weights(data, 0.5), [*np.sqrt(median / f), 0.0], rtol=1e-12)
    np.testing.assert_array_equal(class_weights(data, 0.0), [1, 1, 1, 0])
    with pytest.raises(ValueError, match="no labelled pixel"):
        class_weights(_Labels(tmp_path, [np.full((2, 2), 255)]), 1.0)


def test_the_weighted_loss_is_the_weighted_mean_over_labelled_pixels():
    from pipeline.train import segmentation_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0, :3] = 255
    w = torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64)
    nll = -torch.log_softmax(logits, 1).gather(1, target.clamp(max=2)[:, None])[:, 0]   # (2, 4, 5)
    keep = target != 255
    expected = (w[target[keep]] * nll[keep]).sum() / w[target[keep]].sum()
    loss, terms = segmentation_loss((logits, logits), target, w)
    torch.testing.assert_close(loss, 2 * expected)
    assert terms == pytest.approx([float(expected)] * 2, rel=1e-12)
    plain, _ = segmentation_loss((logits,), target)
    torch.testing.assert_close(plain, nll[keep].mean())


def test_training_with_class_balance_records_the_weights(tiny_data, tmp_path):
    torch.manual_seed(0)
    preset = dataclasses.replace(PRESETS["smoke"], iterations=2, checkpoint_every=2, class_balance=1.0)
    summary = train(DANet(4, "tiny"), tiny_data, preset, str(tmp_path / "w"), seed=0, progress=False)
    from pipeline.train import class_weights

    assert summary["class_weights"] == pytest.approx(class_weights(tiny_data, 1.0).tolist(), rel=1e-5)
    assert len(set(summary["class_weights"])) > 1
    assert _train(tiny_data, tmp_path / "u")[1]["class_weights"] is None
