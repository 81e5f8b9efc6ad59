"""Plausible numbers that were wrong: each case here is compared with an independent computation
(a confusion matrix counted by hand, the network the checkpoint was trained as, a float64
recomputation), and each failed on the code before its fix (the second round after
``test_silent_errors.py``; docs/refusals.md lists the refusals).
"""

import os

import numpy as np
import pytest
import torch

from danet import load_checkpoint
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


def test_class_names_of_another_length_are_refused_not_zipped_short():
    # 2 names for 3 classes: per_class_iou silently lost class 2 (zip stops at the shorter)
    conf = confusion_matrix(np.array([0, 1, 2]), np.array([0, 1, 2]), 3)
    with pytest.raises(ValueError, match=r"2 class names for a 3-class confusion matrix"):
        metrics_from_confusion(conf, ["a", "b"])


def test_sliding_windows_that_leave_gaps_are_refused():
    # stride 24 > crop 16 left rows 16..23 in no window: 0/0 = NaN probabilities, argmax class 0
    def model(x):
        return (torch.zeros(x.shape[0], 2, *x.shape[2:]),)

    x = torch.zeros(1, 3, 40, 40)
    with pytest.raises(ValueError, match="stride 24 .* crop 16"):
        predict_probs(model, x, "sliding", crop=16, stride=24)


# --------------------------------------------------------------------------- checkpoints


def test_a_pipeline_model_loads_as_the_network_it_was_trained_as(pipeline_root):
    # a model trained without dilation, at output stride 16 and with the paper's CAM (the tutorial
    # preset and overrides change these) was loaded by `danet predict/check` as a dilated, stride-8,
    # official-CAM DANet: the same weights computing another function, exit status 0
    import hashlib
    import json

    import luigi

    from pipeline import TrainedModel

    task = TrainedModel(preset="smoke", overrides={"dilated": False, "output_stride": 16}, cam_variant="paper")
    assert luigi.build([task], local_scheduler=True)
    as_trained = task.load_model(task.output())                          # the pipeline's own loader
    model_dir = os.path.dirname(task.output().path)
    record = json.loads(open(task.output().path).read())
    assert record["model_sha256"] == hashlib.sha256(open(os.path.join(model_dir, "model.pt"), "rb").read()).hexdigest()
    x = torch.randn(1, 3, 48, 40, generator=torch.Generator().manual_seed(0))

    def loads_as_trained(name, source):
        model, info = load_checkpoint(os.path.join(model_dir, name))
        assert (info.output_stride, info.dilated, info.cam_variant) == (16, False, "paper")
        assert info.sources["dilated"] == info.sources["cam_variant"] == source
        with torch.no_grad():
            for a, b in zip(model(x), as_trained(x), strict=True):
                assert torch.equal(a, b)
        return info

    info = loads_as_trained("model.pt", "params.json")
    assert info.class_names == ("background", "red-keyed shape", "blue-keyed shape", "key")
    loads_as_trained("work/ckpt_000006.pt", "checkpoint")               # the settings it saved itself
    os.remove(task.output().path)                                        # mid-run: no params.json yet; it
    loads_as_trained("work/ckpt_000006.pt", "checkpoint")               # fell back to dilated, stride 8


def test_danet_warns_when_a_checkpoint_s_settings_are_assumed(tmp_path, capsys):
    # a training checkpoint from before they were saved, with no params.json: the defaults (dilated,
    # stride 8, official CAM) were used without a word; the CLI now says they were assumed
    from danet import DANet
    from danet.cli import main

    model = DANet(4, "tiny")
    ckpt = {"model": model.state_dict(), "optimizer": {}, "iteration": 6, "seconds": 1.0}
    torch.save(ckpt, tmp_path / "ckpt_000006.pt")
    assert main(["export", "--checkpoint", str(tmp_path / "ckpt_000006.pt"), "--out", str(tmp_path / "a.npz")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("danet: warning: checkpoint") and "ckpt_000006.pt" in err[0]
    assert "assumed output_stride=8, multi_grid=None, dilated=True, cam_variant='official'" in err[0]
    torch.save({**ckpt, "settings": model.settings}, tmp_path / "ckpt_000012.pt")    # as pipeline.train saves it
    assert main(["export", "--checkpoint", str(tmp_path / "ckpt_000012.pt"), "--out", str(tmp_path / "b.npz")]) == 0
    assert capsys.readouterr().err == ""


def _record(num_classes, attention="both", cam_variant="official", **preset):
    """The fields of a TrainedModel's params.json that load_checkpoint reads."""
    return {"task": "TrainedModel", "num_classes": num_classes, "params": {"attention": attention,
            "cam_variant": cam_variant}, "preset": {"output_stride": 8, "multi_grid": None, "dilated": True, **preset}}


def test_a_multi_grid_recorded_beside_the_checkpoint_is_used(tmp_path):
    import json

    from danet import DANet
    from tests.test_network_parity import randomise

    src = randomise(DANet(4, "tiny", multi_grid=(2, 3)), seed=2)
    torch.save(src.state_dict(), tmp_path / "model.pt")
    (tmp_path / "params.json").write_text(json.dumps(_record(4, multi_grid=[2, 3])))
    model, info = load_checkpoint(str(tmp_path / "model.pt"))
    assert info.multi_grid == (2, 3) and info.sources["multi_grid"] == "params.json"
    x = torch.randn(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x)[0], src(x)[0])


def test_a_params_json_that_is_not_the_checkpoint_s_record_is_refused(tmp_path):
    import json

    from danet import DANet

    torch.save(DANet(4, "tiny").state_dict(), tmp_path / "model.pt")
    (tmp_path / "params.json").write_text(json.dumps(_record(5)))
    with pytest.raises(ValueError, match=r"params.json says \{'num_classes': 5\} but the weights have"):
        load_checkpoint(str(tmp_path / "model.pt"))


def test_a_model_pt_copied_over_another_run_s_is_refused_by_its_recorded_sha256(tmp_path):
    # another run's model.pt with the same class count and attention, copied into this run's folder,
    # was built with this run's settings (multi-grid (2, 3)): other weights, the wrong network
    import hashlib
    import json

    from danet import DANet

    torch.save(DANet(4, "tiny", multi_grid=(2, 3)).state_dict(), tmp_path / "model.pt")
    sha256 = hashlib.sha256((tmp_path / "model.pt").read_bytes()).hexdigest()
    record = {**_record(4, multi_grid=[2, 3]), "model_sha256": sha256}
    (tmp_path / "params.json").write_text(json.dumps(record))
    assert load_checkpoint(str(tmp_path / "model.pt"))[1].multi_grid == (2, 3)      # its own record: used
    torch.save(DANet(4, "tiny").state_dict(), tmp_path / "model.pt")                 # another run's file
    with pytest.raises(ValueError, match=r"model.pt' is not the model.pt that '.*params.json' describes"):
        load_checkpoint(str(tmp_path / "model.pt"))


def test_a_link_to_a_run_s_model_pt_loads_with_the_record_beside_its_target(tmp_path):
    # `ln -s <run>/model.pt danet.pt`: the record was looked for beside the link only, so a multi-grid
    # model loaded as a plain-grid one (with a warning that the settings were assumed)
    import hashlib
    import json

    from danet import DANet

    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir(), elsewhere.mkdir()
    torch.save(DANet(4, "tiny", multi_grid=(2, 3)).state_dict(), run / "model.pt")
    sha256 = hashlib.sha256((run / "model.pt").read_bytes()).hexdigest()
    (run / "params.json").write_text(json.dumps({**_record(4, multi_grid=[2, 3]), "model_sha256": sha256}))
    (elsewhere / "danet.pt").symlink_to(run / "model.pt")
    info = load_checkpoint(str(elsewhere / "danet.pt"))[1]
    assert info.multi_grid == (2, 3) and info.sources["multi_grid"] == "params.json"
    torch.save(DANet(4, "tiny").state_dict(), elsewhere / "other.pt")             # another file, linked in
    (run / "other.pt").symlink_to(elsewhere / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt' is not the model.pt that '.*run/params.json' describes"):
        load_checkpoint(str(run / "other.pt"))


def test_multi_grid_without_dilation_is_refused():
    # dilated=False promises no dilation, but a multi_grid (a preset's, kept under an override
    # dilated=False) dilated layer4 by (2, 3) anyway: another receptive field than asked for
    from danet import DANet
    from refimpl.backbone import stage_plan

    for build in (lambda: DANet(4, "tiny", dilated=False, multi_grid=(2, 3)),
                  lambda: stage_plan((2, 2, 2, 2), 8, (2, 3), dilated=False)):
        with pytest.raises(ValueError, match=r"multi_grid \(2, 3\) dilates layer4, dilated=False"):
            build()


def test_a_torchvision_file_without_batchnorm_counters_loads_as_a_pretrained_backbone(tmp_path):
    # torchvision's ImageNet ResNet files predate BatchNorm's num_batches_tracked (torch 0.4.1);
    # DANet(pretrained_backbone=...) refused them as "20 problems: missing 'bn1.num_batches_tracked'"
    from danet import DANet
    from danet.backbone import ResNet

    torch.manual_seed(0)
    state = {k: v for k, v in ResNet("resnet18").state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, tmp_path / "r18.pth")
    model = DANet(3, "resnet18", pretrained_backbone=str(tmp_path / "r18.pth"))
    loaded = model.pretrained.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert all(int(v) == 0 for k, v in loaded.items() if k.endswith("num_batches_tracked"))


# --------------------------------------------------------------------------- normalisation


def test_float64_normalisation_uses_the_exact_imagenet_constants():
    # the float64 path subtracted float32-rounded means (0.485 -> 0.48500001430511475): inputs off by
    # 5e-8 relative, 500 times the float64 bar of a NumPy-vs-torch check against an independent pipeline
    from danet.numerics import TOLERANCE, rel_err
    from danet.preprocess import normalize

    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exact = (image / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])  # (H, W, 3)
    assert rel_err(normalize(image, torch.float64)[0].numpy(), exact.transpose(2, 0, 1)) < TOLERANCE["float64"]
    single = ((image.astype(np.float32) / np.float32(255) - np.array([0.485, 0.456, 0.406], np.float32))
              / np.array([0.229, 0.224, 0.225], np.float32))                                     # float32 throughout
    assert np.array_equal(normalize(image, torch.float32)[0].numpy(), single.transpose(2, 0, 1))


def test_a_float64_model_s_probabilities_stay_float64():
    # logits 1e-9 apart: the class probabilities were rounded to float32 first, a tie, argmax class 0
    def model(x):
        logit = torch.zeros(x.shape[0], 2, *x.shape[2:], dtype=x.dtype)
        logit[:, 1] = 1e-9
        return (logit,)

    x = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    for kwargs in ({}, {"flip": True}, {"mode": "sliding", "crop": 4, "stride": 2}):
        probs = predict_probs(model, x, **kwargs)
        assert probs.dtype == torch.float64 and (probs.argmax(1) == 1).all(), kwargs


def test_a_batch_with_no_labelled_pixel_has_loss_zero_not_nan():
    from pipeline.train import IGNORE_INDEX, segmentation_loss

    logits = [torch.randn(2, 3, 4, 4, requires_grad=True) for _ in range(3)]   # fused, pam, cam
    void = torch.full((2, 4, 4), IGNORE_INDEX)
    loss, terms = segmentation_loss(logits, void, weight=torch.tensor([1.0, 2.0, 0.5]))
    loss.backward()
    assert float(loss.detach()) == 0.0 and terms == [0.0, 0.0, 0.0]
    assert all(torch.equal(x.grad, torch.zeros_like(x)) for x in logits)
    one = void.clone()
    one[0, 0, 0] = 1                                                              # one labelled pixel: the usual CE
    loss, _ = segmentation_loss(logits, one)
    expected = sum(-torch.log_softmax(x[0, :, 0, 0], 0)[1] for x in logits)
    assert torch.allclose(loss, expected)


# --------------------------------------------------------------------------- export


def test_a_bfloat16_model_exports_as_exact_float32(tmp_path):
    # NumPy has no bfloat16: export_npz of a bfloat16 model (load_checkpoint(..., dtype=torch.bfloat16))
    # stopped with "TypeError: Got unsupported ScalarType BFloat16"
    from danet import DANet
    from danet.export import export_npz

    model = DANet(3, "tiny").to(torch.bfloat16)
    with np.load(export_npz(model, tmp_path / "w.npz")) as saved:
        for name, tensor in model.state_dict().items():
            assert saved[name].dtype == (np.float32 if tensor.is_floating_point() else np.int64), name
            assert torch.equal(torch.from_numpy(saved[name]).to(tensor.dtype), tensor), name   # nothing rounded
