"""Hypothesis properties of softmax, PAM and CAM (bounded floats, small shapes)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import refimpl


def floats(bound):
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=64)


matrices = st.tuples(st.integers(1, 6), st.integers(1, 12)).flatmap(
    lambda s: arrays(np.float64, s, elements=floats(1e4)))


def feature_maps(max_c=16, bound=3.0):
    """(B, C, H, W) with C a multiple of 8 (the PAM's C/8 reduction)."""
    shape = st.tuples(st.integers(1, 2), st.sampled_from([8, 16][: max_c // 8]), st.integers(1, 4), st.integers(1, 4))
    return shape.flatmap(lambda s: arrays(np.float64, s, elements=floats(bound)))


def pam_weights(C, seed, gamma=0.5):
    r = np.random.default_rng(seed)
    Cr = C // 8
    return {"query_conv.weight": r.standard_normal((Cr, C, 1, 1)) * 0.3, "query_conv.bias": r.standard_normal(Cr) * 0.1,
            "key_conv.weight": r.standard_normal((Cr, C, 1, 1)) * 0.3, "key_conv.bias": r.standard_normal(Cr) * 0.1,
            "value_conv.weight": r.standard_normal((C, C, 1, 1)) * 0.3, "value_conv.bias": r.standard_normal(C) * 0.1,
            "gamma": np.array([gamma])}


@given(matrices)
def test_softmax_rows_nonnegative_sum_to_one(x):
    s = refimpl.softmax(x, axis=-1)
    assert np.all(s >= 0) and np.all(np.isfinite(s))
    np.testing.assert_allclose(s.sum(axis=-1), 1.0, rtol=0, atol=1e-12)


@given(matrices, st.data())
def test_softmax_invariant_to_row_constant(x, data):
    c = data.draw(arrays(np.float64, (x.shape[0], 1), elements=floats(100)))
    np.testing.assert_allclose(refimpl.softmax(x + c), refimpl.softmax(x), rtol=1e-9, atol=1e-12)


@given(feature_maps(), st.integers(0, 2**16), st.randoms(use_true_random=False))
def test_pam_equivariant_to_position_permutation(A, seed, random):
    nb, C, H, W = A.shape
    perm = np.arange(H * W)
    random.shuffle(perm)
    w = pam_weights(C, seed)
    permute = lambda t: t.reshape(nb, C, H * W)[:, :, perm].reshape(nb, C, H, W)  # noqa: E731
    np.testing.assert_allclose(refimpl.position_attention(permute(A), w),
                               permute(refimpl.position_attention(A, w)), rtol=1e-9, atol=1e-9)


@given(feature_maps(), st.sampled_from(["official", "paper"]), st.randoms(use_true_random=False))
def test_cam_equivariant_to_channel_permutation(A, variant, random):
    perm = np.arange(A.shape[1])
    random.shuffle(perm)
    w = {"gamma": np.array([0.3])}
    np.testing.assert_allclose(refimpl.channel_attention(A[:, perm], w, variant=variant),
                               refimpl.channel_attention(A, w, variant=variant)[:, perm], rtol=1e-9, atol=1e-9)


@given(feature_maps(bound=1e4), st.integers(0, 2**16))
def test_gamma_zero_is_identity_and_shapes_preserved(A, seed):
    out_p = refimpl.position_attention(A, pam_weights(A.shape[1], seed, gamma=0.0))
    out_c = refimpl.channel_attention(A, {"gamma": np.array([0.0])})
    assert out_p.shape == A.shape and out_c.shape == A.shape
    np.testing.assert_array_equal(out_p, A)
    np.testing.assert_array_equal(out_c, A)


@given(feature_maps(bound=1e4), st.integers(0, 2**16), st.sampled_from(["official", "paper"]))
def test_no_nan_or_inf_for_large_inputs(A, seed, variant):
    """Energies reach ~1e9 here; the stable softmax must still give finite outputs."""
    out_p, S = refimpl.position_attention(A, pam_weights(A.shape[1], seed), return_attention=True)
    out_c, X = refimpl.channel_attention(A, {"gamma": np.array([0.5])}, variant=variant, return_attention=True)
    for t in (out_p, S, out_c, X):
        assert np.all(np.isfinite(t))
    np.testing.assert_allclose(S.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(X.sum(-1), 1.0, atol=1e-12)


def explicit_pam(A, w):
    """The whole-matrix computation (S = softmax(BᵀC) formed whole), which return_attention selects."""
    return refimpl.position_attention(A, w, return_attention=True)[0]


def max_rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@given(feature_maps(), st.integers(0, 2**16), st.none() | st.integers(1, 20), st.sampled_from([1.0, 4.0]))
def test_blocked_pam_equals_explicit(A, seed, chunk, peaky):
    """Query blocks with deferred normalisation, E = D·Pᵀ·diag(1/l), vs D·softmax(BᵀC)ᵀ: 1e-12.

    ``peaky`` scales the query weights so that energies reach ~100 and rows of S are near one-hot."""
    w = pam_weights(A.shape[1], seed)
    w["query_conv.weight"] = w["query_conv.weight"] * peaky
    assert max_rel(refimpl.position_attention(A, w, chunk_size=chunk), explicit_pam(A, w)) <= 1e-12


@given(feature_maps(bound=1e4), st.integers(0, 2**16), st.none() | st.integers(1, 20))
def test_blocked_pam_finite_for_large_inputs(A, seed, chunk):
    """Energies reach ~1e9: subtracting the row maximum keeps exp finite and l >= 1 in each block."""
    out = refimpl.position_attention(A, pam_weights(A.shape[1], seed), chunk_size=chunk)
    assert np.all(np.isfinite(out))


@given(feature_maps(), st.integers(0, 2**16), st.integers(1, 20))
def test_blocked_pam_float32_close_to_explicit(A, seed, chunk):
    w = {k: v.astype(np.float32) for k, v in pam_weights(A.shape[1], seed).items()}
    A32 = A.astype(np.float32)
    out = refimpl.position_attention(A32, w, chunk_size=chunk)
    assert out.dtype == np.float32
    assert max_rel(out, explicit_pam(A32, w)) <= 1e-5


@given(feature_maps(), st.integers(0, 2**16), st.sampled_from(["official", "paper"]))
def test_float32_agrees_with_float64(A, seed, variant):
    w64 = pam_weights(A.shape[1], seed)
    w32 = {k: v.astype(np.float32) for k, v in w64.items()}
    A32 = A.astype(np.float32)
    p32 = refimpl.position_attention(A32, w32)
    c32 = refimpl.channel_attention(A32 * np.float32(0.2), {"gamma": np.array([0.5], np.float32)}, variant=variant)
    assert p32.dtype == np.float32 and c32.dtype == np.float32
    np.testing.assert_allclose(p32, refimpl.position_attention(A32.astype(np.float64), w64), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(c32, refimpl.channel_attention(A32.astype(np.float64) * 0.2, {"gamma": np.array([0.5])},
                                                              variant=variant), rtol=1e-4, atol=1e-4)
