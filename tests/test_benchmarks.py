"""The benchmark scripts run and report consistent figures (no timing is asserted)."""

from benchmarks import bench_attention


def test_bench_attention_quick_runs_and_agrees(tmp_path):
    result = bench_attention.main(["--quick", "--json", str(tmp_path / "b.json")])
    assert (tmp_path / "b.json").exists()
    assert result["chunked"]["max_abs_diff"] <= 1e-12
    assert result["chunked"]["peak_bytes"]["chunked"] < result["chunked"]["peak_bytes"]["unchunked"]
    assert result["speed"]["pam_max_abs_diff_vs_torch"] < 1e-3
    assert result["speed"]["gemm_gflops"] > 0
