"""benchmarks/gpu_campaign.py: its CPU smoke mode end to end, and its time guards.

The smoke mode is the GPU campaign's own code path (Luigi training of DANet and the FCN, evaluation,
ReferenceCheck, the whole-network check, the deviation of the device's forward, the report, bench_gpu)
with the tiny backbone and a few iterations, so nothing in it is first exercised on the GPU machine.
"""

import json
import time
import types
import zipfile

import luigi
import pytest

from benchmarks import gpu_campaign
from tests.test_device_data import make_camvid_scenes

MIB = 2**20


def test_smoke_campaign_writes_every_section_into_one_folder(tmp_path):
    data = tmp_path / "data"
    make_camvid_scenes(data, "train", 4)
    make_camvid_scenes(data, "val", 3)
    out = tmp_path / "out"
    rc = gpu_campaign.main(["--smoke", "--data-root", str(data), "--out", str(out), "--work", str(tmp_path / "work")])
    results = json.loads((out / "results.json").read_text())
    statuses = {name: results["sections"][name]["status"] for name, *_ in gpu_campaign.SECTIONS}
    assert statuses == {name: "ok" for name, *_ in gpu_campaign.SECTIONS} and rc == 0, results["sections"]
    assert all(name in results for name in statuses) and results["campaign"]["finished"]

    files = list(out.iterdir())                                       # what the device machine brings back
    assert {f.name for f in files} == {"results.json", "report.zip"}
    assert len(files) <= 8 and all(f.stat().st_size <= 16 * MIB for f in files)

    calibrate, danet, fcn = results["calibrate"], results["danet"], results["fcn"]
    assert calibrate["steady_iterations_per_s"] > 0 and calibrate["iterations_run"] == 6
    assert danet["train"]["iterations"] == fcn["train"]["iterations"] == calibrate["chosen_iterations"]
    for model in (danet, fcn):
        timing = model["train"]["timing"]
        assert timing["data_seconds"] > 0 and timing["step_seconds"] > 0
        assert 0 <= model["eval"]["miou"] <= 1 and model["eval"]["num_images"] == 3
    assert danet["reference_check"]["float64"]["head"]["fused"]["max_rel"] <= 1e-12

    summary = results["summary"]
    assert set(summary["miou"]) == {"danet", "fcn"}
    assert summary["bars"]["network_check_float64_le_1e-10"] and summary["bars"]["head_check_float64_le_1e-12"]
    assert summary["bars"]["fcn_and_danet_each_train_le_180_s"] and summary["bars"]["campaign_wall_le_540_s"]
    assert summary["bars"]["r50_train_512x1024_ge_100_images_per_s"] is None        # no ResNet-50 row on the CPU
    assert len(results["network_check"]["images"]) == 3 and results["network_check"]["passed"]
    deviation = results["gpu_deviation"]
    stages = set(results["network_check"]["stages_max"])
    for variant in gpu_campaign.VARIANTS:
        assert set(deviation[variant]["stages_max"]) == stages
        assert 0 <= deviation[variant]["changed_pixel_share"] <= 1
    # bf16 rounds at ~4e-3 per operation; float32 at ~1e-7: the measurement must tell them apart
    assert deviation["bf16_autocast"]["fused_max_rel"] > 100 * deviation["float32_ieee"]["fused_max_rel"] > 0
    assert {r["task"] for r in results["bench_gpu"]["rows"]} == {"train", "infer"}
    assert not [r for r in results["bench_gpu"]["rows"] if "error" in r]
    assert results["environment"]["torch"] and results["environment"]["git"]["commit"]

    with zipfile.ZipFile(out / "report.zip") as z:
        names = set(z.namelist())
        html = z.read("report.html").decode()
    assert {"report.html", "figures/predictions.png", "figures/cam_matrix.png", "danet/eval.json",
            "fcn/metrics.jsonl"} <= names
    assert sum(n.startswith("figures/attention_") for n in names) == 3
    assert html.count("data:image/png;base64,") == 5 and "dilated FCN" in html
    assert luigi.configuration.get_config().get("pipeline", "root", "artifacts") == "artifacts"  # restored


def _campaign(tmp_path, budget_s: float) -> gpu_campaign.Campaign:
    args = types.SimpleNamespace(data_root=str(tmp_path), out=str(tmp_path / "out"), budget_s=budget_s,
                                 train_budget_s=1, pretrained_backbone=None, work=str(tmp_path / "work"),
                                 commit_file="", smoke=True)
    return gpu_campaign.Campaign(args)


class Sleeps(luigi.Task):
    """A Luigi task that takes longer than its section may: the guard must get through Luigi."""

    def complete(self):
        return False

    def run(self):
        time.sleep(30)


def test_an_overrunning_section_is_interrupted_even_inside_luigi_and_the_rest_still_runs(tmp_path):
    campaign = _campaign(tmp_path, budget_s=gpu_campaign.DEFAULT_BUDGET_S)                  # budgets at scale 1
    sections = [("luigi", lambda c: gpu_campaign.luigi_build([Sleeps()]), 1, 0),
                ("raises", lambda c: 1 / 0, 5, 0),
                ("after", lambda c: {"value": 1}, 5, 0)]
    t0 = time.monotonic()
    campaign.run(sections)
    assert time.monotonic() - t0 < 10
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["sections"]["luigi"]["status"] == "timed out"
    assert results["sections"]["raises"]["status"] == "failed"
    assert "ZeroDivisionError" in results["sections"]["raises"]["error"]
    assert results["after"] == {"value": 1} and results["sections"]["after"]["status"] == "ok"


def test_a_section_without_time_left_is_skipped_and_later_ones_keep_their_reserve(tmp_path):
    campaign = _campaign(tmp_path, budget_s=gpu_campaign.DEFAULT_BUDGET_S)                  # budgets at scale 1
    campaign.deadline = time.monotonic() + gpu_campaign.FINAL_S + 12
    ran = []
    campaign.run([("first", lambda c: ran.append("first"), 100, 0),      # limited to what the others leave
                  ("second", lambda c: ran.append("second"), 100, 6),
                  ("third", lambda c: ran.append("third"), 100, 6)])
    sections = json.loads((tmp_path / "out" / "results.json").read_text())["sections"]
    assert sections["first"]["status"] == "skipped" and "left" in sections["first"]["reason"]
    assert sections["first"]["limit_s"] <= 0.1
    assert ran == ["second", "third"]


def test_tf32_is_switched_inside_the_block_and_restored_after():
    """Both of torch's TF32 interfaces agree inside the block (where one was set alone, torch >= 2.9
    raises on reading the other: "mix of the legacy and new APIs"), and everything is as before after it."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision())
    for on in (True, False):
        with gpu_campaign.tf32(on):
            assert matmul.allow_tf32 == on and cudnn.allow_tf32 == on
            assert torch.get_float32_matmul_precision() == ("high" if on else "highest")
            if hasattr(matmul, "fp32_precision"):                         # torch >= 2.9: what the kernels read
                assert matmul.fp32_precision == ("tf32" if on else "ieee")
                assert (cudnn.conv.fp32_precision == "tf32") == on
        assert (matmul.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision()) == before


def test_a_check_cut_short_keeps_the_images_it_finished(tmp_path, monkeypatch):
    """network_check and gpu_deviation rewrite their record after each image: when the timer stops
    one mid-way (here at its second NumPy forward), results.json still holds the first image."""
    import refimpl
    import torch

    from danet import DANet
    from pipeline.build import save_model
    from tests.test_device_data import make_camvid_scenes

    make_camvid_scenes(tmp_path, "val", 3)
    torch.manual_seed(0)
    model = DANet(11, "tiny")
    with torch.no_grad():
        model.head.sa.gamma.fill_(0.3)
        model.head.sc.gamma.fill_(0.2)
    save_model(model, str(tmp_path / "model.pt"))
    campaign = _campaign(tmp_path, budget_s=gpu_campaign.DEFAULT_BUDGET_S)
    campaign.results["danet"] = {"model_dir": str(tmp_path), "eval": {"miou": 0.5},      # as section danet leaves it
                                 "train": {"seconds": 1.0, "timing": {"data_share": 0.1}}}
    real, calls = refimpl.danet_forward, []

    def forward_then_run_out_of_time(*args, **kwargs):                # each section's second image
        calls.append(1)
        if len(calls) in (2, 4):
            raise gpu_campaign.OutOfTime("stand-in for the section's timer")
        return real(*args, **kwargs)

    monkeypatch.setattr(refimpl, "danet_forward", forward_then_run_out_of_time)
    campaign.run([("network_check", gpu_campaign.network_check, 60, 0),
                  ("gpu_deviation", gpu_campaign.gpu_deviation, 45, 0)])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {k: results["sections"][k]["status"] for k in ("network_check", "gpu_deviation")} == \
        {"network_check": "timed out", "gpu_deviation": "timed out"}
    check, deviation = results["network_check"], results["gpu_deviation"]
    assert len(check["images"]) == 1 and check["images_planned"] == 3
    assert check["passed"] and check["overall_max_rel_error"] <= 1e-10
    for variant in gpu_campaign.VARIANTS:
        assert len(deviation[variant]["images"]) == 1 and set(deviation[variant]["stages_max"]) == set(check["stages_max"])
    assert results["summary"]["network_check_float64_max_rel"] == check["overall_max_rel_error"]


def test_bench_gpu_cut_short_keeps_the_rows_it_measured(tmp_path, monkeypatch):
    """bench_gpu is the last section: when its timer stops it at the first inference row, the training
    rows already measured are in results.json."""
    from benchmarks import bench_gpu

    def infer(*args):
        raise gpu_campaign.OutOfTime("stand-in for the section's timer")

    monkeypatch.setattr(bench_gpu, "bench_infer", infer)
    campaign = _campaign(tmp_path, budget_s=gpu_campaign.DEFAULT_BUDGET_S)
    campaign.run([("bench_gpu", gpu_campaign.bench_gpu, 60, 0)])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["sections"]["bench_gpu"]["status"] == "timed out"
    rows = results["bench_gpu"]["rows"]
    assert [(r["task"], r["size"]) for r in rows] == [("train", [32, 64]), ("train", [32, 32])]
    assert all(r["images_per_s"] > 0 for r in rows)
    assert [r["size"] for r in results["summary"]["bench_rows"]] == [[32, 64], [32, 32]]
