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



def test_bench_ablation_refuses_a_bad_option_in_one_line_before_any_work(tmp_path, capsys):
    """docs/camvid.md quotes bench_ablation as a command to copy: a bad --dataset, --preset, --seeds or
    --data-root is one line naming the option, what it expected and what it found, exit 2 (not a
    ValueError's traceback), and nothing is written under --root."""
    import pytest

    from benchmarks import bench_ablation

    cases = {("--preset", "nope"): ["--preset: unknown preset 'nope'", "'camvid'"],
             ("--seeds", "0", "-1"): ["--seeds: seed must be >= 0, got -1"],
             ("--seeds", "x"): ["--seeds", "invalid int value: 'x'"],
             ("--dataset", "nope"): ["--dataset: unknown dataset 'nope'", "'camvid'"],
             ("--dataset", "ade20k"): ["--preset:", "'ade20k' has no preset"],
             ("--data-root", str(tmp_path)): ["--data-root", "'synthetic' is generated"],
             ("--dataset", "camvid", "--data-root", str(tmp_path / "gone")): [
                 f"--data-root '{tmp_path / 'gone'}' does not exist", "CamVid/{train,val,test}"],
             ("--dataset", "camvid", "--data-root", str(tmp_path)): [
                 f"--data-root '{tmp_path}' holds no camvid data", "CamVid/{train,val,test}"]}
    out = tmp_path / "artifacts"
    for args, expected in cases.items():
        with pytest.raises(SystemExit) as exit_:
            bench_ablation.main([*args, "--root", str(out)])
        stderr = capsys.readouterr().err
        assert exit_.value.code == 2, (args, stderr)
        assert len([line for line in stderr.splitlines() if "error:" in line]) == 1, (args, stderr)
        assert all(e in stderr for e in expected), (args, stderr)
        assert not out.exists(), args


def test_bench_ablation_as_a_command_says_a_bad_data_root_without_a_traceback(tmp_path):
    """The command docs/camvid.md quotes, run as a program with a --data-root that does not exist."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    gone = tmp_path / "gone"
    done = subprocess.run([sys.executable, "benchmarks/bench_ablation.py", "--dataset", "camvid", "--preset", "camvid",
                           "--data-root", str(gone), "--seeds", "0", "1", "2", "--root", str(tmp_path / "artifacts")],
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"bench_ablation.py: error: --data-root '{gone}' does not exist; it should hold camvid" in done.stderr
    assert not (tmp_path / "artifacts").exists()


def test_quickstart_times_make_lab_alone_with_a_lent_virtualenv(tmp_path):
    """``quickstart.py --only "make lab" --venv DIR`` (how docs/benchmarks.md times ``make lab``): a fresh
    clone runs that one command, make installs nothing (the lent virtualenv's stamp is left as it was),
    JupyterLab reports its server running and is stopped; an --only that is not a Quick start command
    is refused in one line."""
    import json
    import os
    import sys
    from pathlib import Path

    import pytest

    from benchmarks import quickstart

    venv = Path(sys.prefix)
    stamp = venv / ".installed"
    before = stamp.stat().st_mtime if stamp.exists() else None
    out = tmp_path / "q.json"
    assert quickstart.main(["--only", "make lab", "--venv", str(venv), "--keep", str(tmp_path / "clone"),
                            "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["typed"] == ["make lab"] and len(result["results"]) == 1 and result["ok"]
    assert "is running at" in result["results"][0]["last_line"][0]
    log = (tmp_path / "clone" / "danet" / "lab.log").read_text()
    assert "pip install" not in log and os.path.islink(tmp_path / "clone" / "danet" / ".venv" / "bin")
    assert (stamp.stat().st_mtime if stamp.exists() else None) == before
    with pytest.raises(SystemExit) as exit_:
        quickstart.main(["--only", "make lap"])
    assert exit_.value.code == 2


def test_bench_ablation_trains_a_real_dataset_with_its_own_preset_by_default(tmp_path):
    # the tasks' --preset defaults to the dataset's own; the benchmark kept "cpu" (the built-in data's)
    # for --dataset camvid too
    import argparse

    from benchmarks.bench_ablation import _refuse_bad_options
    from tests.test_datasets import make_camvid

    for split in ("train", "val"):
        make_camvid(tmp_path, split)

    def preset(**given):
        args = argparse.Namespace(**{"dataset": "synthetic", "preset": None, "data_root": "", "seeds": [0], **given})
        _refuse_bad_options(argparse.ArgumentParser(), args)
        return args.preset

    assert preset() == "cpu"
    assert preset(dataset="camvid", data_root=str(tmp_path)) == "camvid"
    assert preset(dataset="camvid", data_root=str(tmp_path), preset="smoke") == "smoke"
