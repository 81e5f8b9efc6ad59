"""The benchmark scripts run and report consistent figures (no timing is asserted)."""

from benchmarks import bench_attention


def test_bench_attention_quick_runs_and_agrees(tmp_path):
    result = bench_attention.main(["--quick", "--json", str(tmp_path / "b.json")])
    assert (tmp_path / "b.json").exists()
    assert result["chunked"]["max_abs_diff"] <= 1e-12
    assert result["chunked"]["peak_bytes"]["chunked"] < result["chunked"]["peak_bytes"]["unchunked"]
    assert result["speed"]["pam_max_abs_diff_vs_torch"] < 1e-3
    assert result["speed"]["gemm_gflops"] > 0


def test_bench_gpu_cpu_path_reports_every_row(tmp_path):
    """bench_gpu's smoke run on the CPU: one training row and one inference row per size, each
    measured (no error row, positive throughput, finite loss and logits, the PAM asked for), the
    softmax check in float32, and the JSON the same as what main returns -- not only exit status 0."""
    import json
    import math

    from benchmarks import bench_gpu

    out = tmp_path / "gpu.json"
    rc = bench_gpu.main(["--device", "cpu", "--backbones", "tiny", "--batch", "2", "--crop", "32", "--no-amp",
                         "--sizes", "32x64,40x48", "--iters", "1", "--warmup", "0", "--pam-impl", "chunked",
                         "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu (smoke run)" and result["amp"] is False
    assert result["softmax_check"]["pam_softmax"] == result["softmax_check"]["cam_softmax"] == "torch.float32"
    rows = result["rows"]
    assert [(r["task"], r["size"]) for r in rows] == [("train", [32, 32]), ("infer", [32, 64]), ("infer", [40, 48])]
    assert not [r for r in rows if "error" in r]
    train, *infer = rows
    assert train["images_per_s"] > 0 and math.isfinite(train["loss"]) and train["loss"] > 0
    assert train["pam_impl"] == "explicit" and train["peak_gib"] is None
    for r in infer:
        assert r["pam_impl"] == "chunked" and r["frames_per_s"] > 0 and r["logits_finite"] is True
        assert r["N"] == (r["size"][0] // 8) * (r["size"][1] // 8)


def test_bench_gpu_a_failing_row_costs_only_itself(tmp_path, monkeypatch):
    """A row whose kernel fails (other than running out of memory) records its error; the rows after
    it are still measured and in the JSON, and the exit status says that one failed."""
    import json

    from benchmarks import bench_gpu

    real = bench_gpu.bench_infer

    def infer(backbone, size, args):
        if size == (32, 64):
            raise RuntimeError("CUDA error: no kernel image is available\nsecond line")
        return real(backbone, size, args)

    monkeypatch.setattr(bench_gpu, "bench_infer", infer)
    out = tmp_path / "gpu.json"
    rc = bench_gpu.main(["--device", "cpu", "--backbones", "tiny", "--batch", "1", "--crop", "32", "--no-amp",
                         "--sizes", "32x64,40x48", "--iters", "1", "--warmup", "0", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert rc == 1 and [(r["task"], r["size"]) for r in rows] == [("train", [32, 32]), ("infer", [32, 64]),
                                                                  ("infer", [40, 48])]
    assert rows[1]["error"] == "RuntimeError: CUDA error: no kernel image is available"
    assert "error" not in rows[0] and "error" not in rows[2] and rows[2]["frames_per_s"] > 0


def test_bench_network_runs_an_oblong_image_in_float64(monkeypatch):
    """bench_network's --size HxW and --dtype float64 (the campaign's whole-network check of a CamVid
    image): both forwards run in float64 on an H != W image and agree to float64 rounding."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # as run as a script
    from benchmarks import bench_network

    result = bench_network.main(["--quick", "--size", "40x56", "--dtype", "float64", "--threads", "1"])
    assert result["image"] == [40, 56] and result["feature_map"] == [5, 7] and result["dtype"] == "float64"
    assert result["fused_max_rel_diff"] <= 1e-12 and result["numpy_seconds"] > 0 and result["torch_seconds"] > 0


def test_bench_ablation_trains_a_real_dataset_with_its_own_preset_by_default():
    # the tasks' --preset defaults to the dataset's own; the benchmark kept "cpu" (the built-in data's)
    # for --dataset camvid too
    from benchmarks.bench_ablation import parse_args

    assert parse_args([]).preset == "cpu"
    assert parse_args(["--dataset", "camvid", "--data-root", "/data"]).preset == "camvid"
    assert parse_args(["--dataset", "camvid", "--preset", "smoke"]).preset == "smoke"
