"""Memory-bounded position attention: "chunked" and "sdpa" compute what "explicit" does.

out = γ·D·softmax(BᵀC)ᵀ + A. Checked in float64 (tight) and float32 (loose), with γ ≠ 0 (γ = 0 makes
PAM the identity and would prove nothing), inputs scaled so the attention is far from uniform,
forward and backward, and through a whole DANet("tiny"). Also the benchmark scripts' smoke runs,
and that the NumPy reference's query-blocked path really holds less than the N×N matrix.
"""

import tracemalloc

import numpy as np
import pytest
import torch

import danet.attention
from danet import DANet, DANetHead, PositionAttention
import refimpl.attention
from danet.attention import DEFAULT_CHUNK_SIZE, PAM_IMPLS

@pytest.fixture(autouse=True)
def _one_thread():
    """These tiny shapes gain nothing from threads, and on a busy 2-core machine OpenMP's
    waiting made them ~100× slower; one thread keeps the file fast. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SHAPES = [(1, 16, 4, 4), (2, 32, 5, 7), (3, 16, 1, 9), (2, 64, 6, 3)]   # (B, C, H, W): non-square, B > 1
BOUNDED = [("chunked", 5), ("chunked", DEFAULT_CHUNK_SIZE), ("sdpa", DEFAULT_CHUNK_SIZE)]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def _pair(C, impl, chunk, dtype, seed=0):
    """An explicit PAM with γ ≠ 0 and peaky attention, and a copy using ``impl``."""
    torch.manual_seed(seed)
    ref = PositionAttention(C).to(dtype)
    with torch.no_grad():
        ref.gamma.fill_(0.7)
        ref.query_conv.weight.mul_(4.0)   # energies of order 10: the softmax is far from uniform
    other = PositionAttention(C, impl=impl, chunk_size=chunk).to(dtype)
    other.load_state_dict(ref.state_dict())
    return ref, other


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("impl,chunk", BOUNDED)
def test_bounded_forward_equals_explicit(impl, chunk, shape, dtype):
    ref, other = _pair(shape[1], impl, chunk, dtype)
    A = torch.randn(*shape, dtype=dtype)
    assert ref.impl == "explicit" and other.impl == impl
    with torch.no_grad():
        S = ref.attention(A)                                    # (B, N, N)
        assert float(S.max()) > 2.0 / S.shape[-1]              # not uniform: the test can fail
        torch.testing.assert_close(other(A), ref(A), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("impl,chunk", [("chunked", 4), ("sdpa", DEFAULT_CHUNK_SIZE)])
def test_bounded_gradients_equal_explicit(impl, chunk, dtype):
    ref, other = _pair(32, impl, chunk, dtype, seed=1)
    A = torch.randn(2, 32, 5, 6, dtype=dtype)
    w = torch.randn(2, 32, 5, 6, dtype=dtype)                  # a non-trivial upstream gradient
    grads = []
    for m in (ref, other):
        x = A.clone().requires_grad_(True)
        (m(x) * w).sum().backward()
        grads.append([x.grad] + [p.grad for p in m.parameters()])
    names = ["A"] + [n for n, _ in ref.named_parameters()]
    for name, g_ref, g in zip(names, *grads):
        torch.testing.assert_close(g, g_ref, **TOL[dtype], msg=lambda m, n=name: f"gradient of {n}: {m}")


def test_danet_tiny_same_logits_for_every_impl():
    torch.manual_seed(0)
    ref = DANet(3, "tiny", pam_impl="explicit").eval()
    with torch.no_grad():
        ref.head.sa.gamma.fill_(0.8)
        ref.head.sc.gamma.fill_(0.3)
    x = torch.randn(2, 3, 32, 40)                               # features (2, 128, 4, 5), N = 20
    with torch.no_grad():
        want = ref(x)
        for impl, chunk in [("chunked", 7), ("chunked", DEFAULT_CHUNK_SIZE), ("sdpa", 11)]:
            model = DANet(3, "tiny", pam_impl=impl, pam_chunk_size=chunk).eval()
            model.load_state_dict(ref.state_dict())
            assert model.head.sa.impl == impl and model.head.sa.chunk_size == chunk
            for a, b in zip(model(x), want):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_impl_is_the_only_switch(monkeypatch):
    """chunk_size never selects an implementation: "explicit" and "sdpa" accept and ignore it."""
    assert DEFAULT_CHUNK_SIZE == 1024 and PAM_IMPLS == ("explicit", "chunked", "sdpa")
    assert DANet(3, "tiny").head.sa.impl == "explicit"
    assert DANetHead(64, 3, pam_chunk_size=4).sa.impl == "explicit"
    ran = []
    for name in ("_pam_chunked", "_pam_sdpa"):
        real = getattr(danet.attention, name)
        monkeypatch.setattr(danet.attention, name, lambda *a, n=name, f=real: ran.append(n) or f(*a))
    pam = PositionAttention(16, chunk_size=4)
    assert (pam.impl, pam.chunk_size) == ("explicit", 4)
    with torch.no_grad():
        pam.gamma.fill_(0.7)
        A = torch.randn(1, 16, 3, 5)
        want = pam(A)
        assert ran == []                                       # chunk_size given: still explicit
        pam.impl = "chunked"                                   # a plain attribute: this switches
        torch.testing.assert_close(pam(A), want, rtol=1e-5, atol=1e-6)
        pam.impl = "sdpa"
        torch.testing.assert_close(pam(A), want, rtol=1e-5, atol=1e-6)
    assert ran == ["_pam_chunked", "_pam_sdpa"]


@pytest.mark.parametrize("make", [
    lambda **kw: PositionAttention(16, **kw),
    lambda **kw: DANetHead(64, 3, **{"pam_" + k: v for k, v in kw.items()}),
    lambda **kw: DANet(3, "tiny", **{"pam_" + k: v for k, v in kw.items()}),
], ids=["PositionAttention", "DANetHead", "DANet"])
def test_bad_impl_or_chunk_size_refused_by_name(make):
    for impl in ("flash", "Explicit", None, 3):
        with pytest.raises(ValueError, match=rf"PositionAttention: impl must be one of .*, got {impl!r}"):
            make(impl=impl)
    for chunk in (0, -2, None, 2.5, True, "8"):
        with pytest.raises(ValueError, match=rf"PositionAttention: chunk_size must be an int >= 1, got {chunk!r}"):
            make(impl="chunked", chunk_size=chunk)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1, got 0"):
        make(impl="explicit", chunk_size=0)                    # ignored by "explicit", still checked


def test_bad_impl_assigned_later_is_refused_in_forward():
    pam = PositionAttention(16)
    pam.impl = "naive"
    with pytest.raises(ValueError, match="PositionAttention: impl must be one of .*, got 'naive'"):
        pam(torch.randn(1, 16, 2, 2))


@pytest.mark.parametrize("impl,chunk", [("explicit", DEFAULT_CHUNK_SIZE), ("chunked", 5)])
def test_softmax_in_float32_under_autocast(impl, chunk):
    """Under bf16 autocast the PAM and CAM softmaxes run in float32; outside it nothing changes."""
    from danet import ChannelAttention
    ref, pam = _pair(16, impl, chunk, torch.float32)
    cam = ChannelAttention()
    A = torch.randn(1, 16, 4, 5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, mid = ref.forward_with_intermediates(A)
        assert mid["energy"].dtype == torch.bfloat16 and mid["S"].dtype == torch.float32
        assert cam.forward_with_intermediates(A)[1]["attention"].dtype == torch.float32
        out = pam(A)
    with torch.no_grad():
        exact = ref(A)
        assert ref.forward_with_intermediates(A)[1]["S"].dtype == torch.float32
    torch.testing.assert_close(out.float(), exact, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sdpa_runs_on_a_fused_kernel(dtype):
    """"sdpa" must reach the flash kernel, which never forms N×N (the math fallback would)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    ref, pam = _pair(32, "sdpa", DEFAULT_CHUNK_SIZE, dtype)
    A = torch.randn(2, 32, 6, 5, dtype=dtype)
    with torch.no_grad():
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):   # raises if flash cannot take the inputs
            out = pam(A)
        torch.testing.assert_close(out, ref(A), **TOL[dtype])


def test_bench_pam_memory_quick_figures_are_consistent():
    """Smoke run of the memory benchmark (fresh processes); figures consistent, no timing asserted."""
    from benchmarks import bench_pam_memory
    result = bench_pam_memory.main(["--quick"])
    rows = result["rows"]
    assert [r["impl"] for r in rows] == list(bench_pam_memory.IMPLS)
    assert result["memory_method"].startswith(("VmHWM", "ru_maxrss"))
    explicit = rows[0]
    assert explicit["memory_ratio"] == 1.0 and explicit["max_abs_diff"] == 0.0
    for r in rows:
        assert r["N"] == r["H"] * r["W"] and r["nxn_bytes"] == r["N"] ** 2 * 4
        assert r["peak_bytes"] == max(r["peak_bytes_runs"]) and r["seconds"] > 0
        assert r["time_ratio"] == pytest.approx(r["seconds"] / explicit["seconds"])
        assert r["memory_ratio"] == pytest.approx(r["peak_bytes"] / explicit["peak_bytes"])
        assert r["max_abs_diff_rel"] <= bench_pam_memory.RTOL_FLOAT32
    assert explicit["peak_bytes"] >= explicit["nxn_bytes"]       # the N×N energy really was held
    assert set(result["bar"]["impls"]) == {"chunked", "sdpa"}
    for v in result["bar"]["impls"].values():
        assert v["close"] and v["passed"] == (v["memory_ok"] and v["close"])


def test_bench_gpu_without_cuda_exits_cleanly():
    """On a machine without CUDA the GPU benchmark measures nothing, says so, and exits 0."""
    import subprocess
    import sys
    from pathlib import Path
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the benchmark would measure")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no CUDA device: nothing measured"


def test_bench_gpu_code_path_runs_on_cpu(tmp_path):
    """The GPU benchmark's train and inference loops, smoke-run on the CPU with the tiny backbone:
    a row per training size and per inference size, each with its figures, written to --json."""
    import json

    from benchmarks import bench_gpu
    rc = bench_gpu.main(["--device", "cpu", "--backbones", "tiny", "--batch", "2", "--train-sizes", "32x64,32x32",
                         "--sizes", "32x64", "--iters", "1", "--warmup", "0", "--pam-impl", "chunked",
                         "--json", str(tmp_path / "gpu.json")])
    assert rc == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["softmax_check"]["pam_softmax"] == result["softmax_check"]["cam_softmax"] == "torch.float32"
    train = [r for r in result["rows"] if r["task"] == "train"]
    infer = [r for r in result["rows"] if r["task"] == "infer"]
    assert [r["size"] for r in train] == [[32, 64], [32, 32]] and [r["size"] for r in infer] == [[32, 64]]
    for r in train:
        assert r["images_per_s"] > 0 and np.isfinite(r["loss"]) and r["peak_gib"] is None
        assert r["tflop_per_s"] == pytest.approx(r["images_per_s"] * r["tflop_per_image"])
    assert train[0]["tflop_per_image"] == pytest.approx(2 * train[1]["tflop_per_image"], rel=0.1)  # twice the pixels
    assert infer[0]["frames_per_s"] > 0 and infer[0]["logits_finite"] and infer[0]["N"] == 4 * 8


def _numpy_peak_bytes(fn):
    """Peak bytes allocated while fn runs; tracemalloc sees NumPy's array buffers."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_numpy_blocked_pam_memory_is_bounded(monkeypatch):
    """N = 4096, blocks of 256 rows: the blocked path's peak is far below one N×N matrix, which the
    explicit path does hold. Also the default block size, through a smaller BLOCK_ELEMENTS."""
    rng = np.random.default_rng(0)
    C, H, W = 16, 64, 64                                        # N = 4096
    N, itemsize = H * W, 4
    w = {k: v.astype(np.float32) for k, v in {
        "query_conv.weight": rng.standard_normal((2, C, 1, 1)), "query_conv.bias": np.zeros(2),
        "key_conv.weight": rng.standard_normal((2, C, 1, 1)), "key_conv.bias": np.zeros(2),
        "value_conv.weight": rng.standard_normal((C, C, 1, 1)), "value_conv.bias": np.zeros(C),
        "gamma": np.array([0.5])}.items()}
    A = rng.standard_normal((1, C, H, W)).astype(np.float32)
    nxn = N * N * itemsize                                      # 64 MiB
    explicit = _numpy_peak_bytes(lambda: refimpl.position_attention(A, w, return_attention=True))
    blocked = _numpy_peak_bytes(lambda: refimpl.position_attention(A, w, chunk_size=256))
    assert explicit >= nxn                                      # the measure sees the N×N matrix
    assert blocked < nxn / 8, f"blocked peak {blocked / 2**20:.1f} MiB vs N×N {nxn / 2**20:.0f} MiB"
    monkeypatch.setattr(refimpl.attention, "BLOCK_ELEMENTS", 256 * N)
    default = _numpy_peak_bytes(lambda: refimpl.position_attention(A, w))
    assert default < nxn / 8, f"default-block peak {default / 2**20:.1f} MiB vs N×N {nxn / 2**20:.0f} MiB"
