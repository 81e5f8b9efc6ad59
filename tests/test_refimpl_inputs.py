"""Malformed arguments to the NumPy reference are refused with a message naming the argument.

Each case calls one ``refimpl`` function with one argument wrong (rank, dtype, shape, a
non-finite value, a bad chunk_size) and checks the exception type and that the message names the
function and the argument. NaN or inf in a feature map is refused, not propagated: through the
PAM's softmax a single bad position would turn every output position into NaN.
"""

import numpy as np
import pytest

import refimpl
from refimpl import WeightError

def pam_weights(C=16, Cr=2, dtype=np.float64):
    r = np.random.default_rng(0)
    w = {"query_conv.weight": r.standard_normal((Cr, C, 1, 1)), "query_conv.bias": r.standard_normal(Cr),
         "key_conv.weight": r.standard_normal((Cr, C, 1, 1)), "key_conv.bias": r.standard_normal(Cr),
         "value_conv.weight": r.standard_normal((C, C, 1, 1)), "value_conv.bias": r.standard_normal(C),
         "gamma": np.array([0.5])}
    return {k: v.astype(dtype) for k, v in w.items()}


A = np.random.default_rng(1).standard_normal((1, 16, 3, 4))          # (B, C, H, W)
CAM_W = {"gamma": np.array([0.5])}


# ---- softmax ---------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [np.arange(4), np.array([True, False]), np.array(["a"]), [1, 2]])
def test_softmax_refuses_non_float(x):
    with pytest.raises(TypeError, match=r"softmax: x must be a floating-point array, got dtype"):
        refimpl.softmax(x)


@pytest.mark.parametrize("axis", [2, -3, 1.0, True, None])
def test_softmax_refuses_bad_axis(axis):
    with pytest.raises(ValueError, match=rf"softmax: axis must be an int in \[-2, 2\) .*got {axis!r}"):
        refimpl.softmax(np.zeros((2, 3)), axis=axis)


def test_softmax_refuses_a_scalar():
    with pytest.raises(ValueError, match=r"softmax: axis must be an int in \[-0, 0\) for x of shape \(\)"):
        refimpl.softmax(np.float64(1.0))


@pytest.mark.parametrize("out", [np.zeros((3, 2)), np.zeros((2, 3), np.float32), [0.0] * 6])
def test_softmax_refuses_bad_out(out):
    with pytest.raises(ValueError, match=r"softmax: out must be an array of x's shape \(2, 3\) and dtype float64"):
        refimpl.softmax(np.zeros((2, 3)), out=out)


# ---- position_attention and channel_attention --------------------------------------------------

def _pam(x, **kw):
    return refimpl.position_attention(x, pam_weights(), **kw)


def _cam(x, **kw):
    return refimpl.channel_attention(x, CAM_W, **kw)


@pytest.mark.parametrize("fn,name", [(_pam, "position_attention"), (_cam, "channel_attention")])
@pytest.mark.parametrize("shape", [(16, 3, 4), (1, 16, 3, 4, 1), (16,)])
def test_attention_refuses_wrong_rank(fn, name, shape):
    with pytest.raises(ValueError, match=rf"{name}: x must have shape \(B, C, H, W\), got {len(shape)} dimensions"):
        fn(np.zeros(shape))


@pytest.mark.parametrize("fn,name", [(_pam, "position_attention"), (_cam, "channel_attention")])
@pytest.mark.parametrize("x,found", [(A.astype(np.int32), "ndarray of dtype int32"),
                                     (A.astype(complex), "ndarray of dtype complex128"),
                                     (A > 0, "ndarray of dtype bool"), (A.tolist(), "list")])
def test_attention_refuses_non_float(fn, name, x, found):
    with pytest.raises(TypeError, match=rf"{name}: x must be a floating-point numpy array, got {found}"):
        fn(x)


@pytest.mark.parametrize("fn,name", [(_pam, "position_attention"), (_cam, "channel_attention")])
@pytest.mark.parametrize("value,count", [(np.nan, 1), (np.inf, 1), (-np.inf, 3)])
def test_attention_refuses_non_finite_features(fn, name, value, count):
    x = A.copy()
    x.flat[[0, 7, 40][:count]] = value
    with pytest.raises(ValueError, match=rf"{name}: x holds {count} non-finite values \(NaN or inf\) out of {A.size}"):
        fn(x)


@pytest.mark.parametrize("key,shape", [("query_conv.weight", (2, 16, 1)), ("key_conv.bias", (3,)),
                                       ("value_conv.weight", (16, 8, 1, 1)), ("gamma", ())])
def test_pam_refuses_weights_of_wrong_shape(key, shape):
    w = {**pam_weights(), key: np.zeros(shape)}
    with pytest.raises(WeightError, match=rf"position_attention weights: .*'{key}' has shape"):
        refimpl.position_attention(A, w)


def test_pam_refuses_a_weight_mapping_with_missing_names():
    w = pam_weights()
    del w["value_conv.bias"]
    with pytest.raises(WeightError, match=r"position_attention weights: missing array 'value_conv.bias'"):
        refimpl.position_attention(A, w)


@pytest.mark.parametrize("gamma", [np.nan, np.inf, -np.inf])
def test_attention_refuses_non_finite_gamma(gamma):
    with pytest.raises(ValueError, match=r"position_attention: 'gamma' must be finite"):
        refimpl.position_attention(A, {**pam_weights(), "gamma": np.array([gamma])})
    with pytest.raises(ValueError, match=r"channel_attention: 'gamma' must be finite"):
        refimpl.channel_attention(A, {"gamma": np.array([gamma])})


def test_cam_refuses_gamma_of_wrong_shape():
    with pytest.raises(WeightError, match=r"channel_attention weights: array 'gamma' has shape \(2,\)"):
        refimpl.channel_attention(A, {"gamma": np.zeros(2)})


@pytest.mark.parametrize("chunk", [0, -1, 2.5, 3.0, True, "4", np.float64(3), [2]])
def test_pam_refuses_bad_chunk_size(chunk):
    with pytest.raises(ValueError, match=r"position_attention: chunk_size must be a positive integer or None, got"):
        _pam(A, chunk_size=chunk)


@pytest.mark.parametrize("chunk", [1, 5, np.int64(5), 10**6])
def test_pam_accepts_integer_chunk_sizes(chunk):
    np.testing.assert_allclose(_pam(A, chunk_size=chunk), _pam(A, return_attention=True)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("flag", ["return_attention", "return_intermediates"])
def test_pam_refuses_chunk_size_with_the_whole_matrix(flag):
    with pytest.raises(ValueError, match="position_attention: return_attention/return_intermediates need "
                                         "the whole N x N matrix; call without chunk_size"):
        _pam(A, chunk_size=4, **{flag: True})


def test_inputs_are_not_modified():
    x, w = A.copy(), pam_weights()
    w0 = {k: v.copy() for k, v in w.items()}
    refimpl.position_attention(x, w, chunk_size=5)
    refimpl.channel_attention(x, CAM_W)
    np.testing.assert_array_equal(x, A)
    for k in w:
        np.testing.assert_array_equal(w[k], w0[k])


# ---- head.py: danet_head, conv2d, batch_norm ---------------------------------------------------

X = np.random.default_rng(2).standard_normal((1, 4, 5, 5))           # (B, C_in, H, W)
CONV_W = np.random.default_rng(3).standard_normal((3, 4, 3, 3))      # (C_out, C_in, k, k)
BN = tuple(np.ones(4) for _ in range(4))                             # weight, bias, mean, var


def test_danet_head_refuses_wrong_rank():
    with pytest.raises(ValueError, match=r"danet_head: x must have shape \(B, C, H, W\)"):
        refimpl.danet_head(np.zeros((64, 3, 3)), {})


def test_danet_head_refuses_weights_that_do_not_match():
    with pytest.raises(WeightError, match=r"danet_head weights: missing array 'conv6.1.weight'"):
        refimpl.danet_head(np.zeros((1, 64, 3, 3)), {})


def test_danet_head_refuses_non_finite_features_somewhere():
    """Refused today by the PAM inside the head (NaN survives conv, BN and ReLU)."""
    from danet import DANetHead, state_dict_to_numpy
    w = state_dict_to_numpy(DANetHead(64, 3).double())
    x = np.zeros((1, 64, 3, 3))
    x[0, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values"):
        refimpl.danet_head(x, w)


def test_danet_head_names_itself_for_non_finite_features():
    from danet import DANetHead, state_dict_to_numpy
    x = np.zeros((1, 64, 3, 3))
    x[0, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"danet_head: x holds 1 non-finite"):
        refimpl.danet_head(x, state_dict_to_numpy(DANetHead(64, 3).double()))


def test_danet_head_refuses_non_float():
    from danet import DANetHead, state_dict_to_numpy
    with pytest.raises(TypeError, match=r"danet_head: x must be a floating-point"):
        refimpl.danet_head(np.zeros((1, 64, 3, 3), np.int64), state_dict_to_numpy(DANetHead(64, 3).double()))


def test_conv2d_refuses_weight_that_does_not_fit():
    with pytest.raises(ValueError, match=r"conv2d: weight \(3, 5, 3, 3\) does not fit input \(1, 4, 5, 5\)"):
        refimpl.conv2d(X, np.zeros((3, 5, 3, 3)))


@pytest.mark.parametrize("x", [np.zeros((4, 5, 5)), np.zeros((1, 1, 4, 5, 5))])
def test_conv2d_refuses_wrong_rank_of_x(x):
    with pytest.raises(ValueError, match=r"conv2d: x must have shape \(B, C, H, W\)"):
        refimpl.conv2d(x, CONV_W)


def test_conv2d_refuses_wrong_rank_of_weight():
    with pytest.raises(ValueError, match=r"conv2d: weight must have shape \(C_out, C_in, kh, kw\)"):
        refimpl.conv2d(X, np.zeros((3, 4, 3)))


def test_conv2d_refuses_non_float_input():
    with pytest.raises(TypeError, match=r"conv2d: x must be a floating-point"):
        refimpl.conv2d(X.astype(np.int64), CONV_W)


@pytest.mark.parametrize("bias", [np.zeros(1), np.zeros(5), np.zeros((3, 1))])
def test_conv2d_refuses_bias_of_wrong_shape(bias):
    with pytest.raises(ValueError, match=r"conv2d: bias must have shape \(3,\)"):
        refimpl.conv2d(X, CONV_W, bias)


def test_batch_norm_refuses_wrong_rank():
    with pytest.raises(ValueError, match=r"batch_norm: x must have shape \(B, C, H, W\)"):
        refimpl.batch_norm(np.zeros((4, 5)), *BN)


def test_batch_norm_refuses_non_float():
    with pytest.raises(TypeError, match=r"batch_norm: x must be a floating-point"):
        refimpl.batch_norm(X.astype(np.int64), *BN)


@pytest.mark.parametrize("i,name", [(0, "weight"), (1, "bias"), (2, "running_mean"), (3, "running_var")])
def test_batch_norm_refuses_statistics_of_wrong_shape(i, name):
    args = list(BN)
    args[i] = np.ones(1)                                              # would broadcast silently
    with pytest.raises(ValueError, match=rf"batch_norm: {name} must have shape \(4,\)"):
        refimpl.batch_norm(X, *args)


# ---- the layers: the same named checks (issue 18) ------------------------------------------------

LAYERS = [("interpolate_bilinear", lambda x: refimpl.interpolate_bilinear(x, (5, 6), align_corners=True)),
          ("max_pool2d", lambda x: refimpl.max_pool2d(x)),
          ("conv2d", lambda x: refimpl.conv2d(x, np.ones((2, x.shape[1] if x.ndim == 4 else 1, 1, 1))))]


@pytest.mark.parametrize("name,fn", LAYERS)
def test_layers_refuse_integer_input(name, fn):
    with pytest.raises(TypeError, match=rf"{name}: x must be a floating-point numpy array, got ndarray of dtype int64"):
        fn(np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4))


@pytest.mark.parametrize("name,fn", LAYERS)
def test_layers_refuse_wrong_rank(name, fn):
    with pytest.raises(ValueError, match=rf"{name}: x must have shape \(B, C, H, W\), got 3 dimensions"):
        fn(np.zeros((3, 4, 4)))


@pytest.mark.parametrize("name,fn", LAYERS + [
    ("position_attention", lambda x: refimpl.position_attention(x, pam_weights(C=x.shape[1]))),
    ("channel_attention", lambda x: refimpl.channel_attention(x, CAM_W))])
def test_float16_is_refused_by_name(name, fn):
    with pytest.raises(TypeError, match=rf"{name}: x must be float32 or float64, got dtype float16"):
        fn(np.zeros((1, 16, 4, 4), np.float16))


@pytest.mark.parametrize("bad,rows", [(np.nan, 1), (np.inf, 1)])
def test_softmax_refuses_nan_and_inf_like_pam(bad, rows):
    x = np.zeros((3, 4))
    x[1, 2] = bad
    with pytest.raises(ValueError, match=rf"softmax: x holds NaN or \+inf \(or a row of only -inf\) in {rows} of 3 rows"):
        refimpl.softmax(x)


def test_softmax_keeps_minus_inf_as_a_mask():
    x = np.array([[0.0, -np.inf, 0.0]])
    np.testing.assert_allclose(refimpl.softmax(x), [[0.5, 0.0, 0.5]])
    with pytest.raises(ValueError, match="softmax"):
        refimpl.softmax(np.full((2, 2), -np.inf))
    with pytest.raises(TypeError, match="softmax: x must be float32 or float64, got dtype float16"):
        refimpl.softmax(np.zeros(3, np.float16))
