"""refimpl's building blocks against SciPy, an oracle written by other people for other purposes.

- ``refimpl.conv2d`` (stride, padding, dilation) against ``scipy.signal.correlate``, one (output,
  input) channel pair at a time: correlate the zero-padded input plane with the kernel spread out by
  the dilation, keep the 'valid' part, take every stride-th sample;
- ``refimpl.interpolate_bilinear`` against ``scipy.ndimage.map_coordinates(order=1)`` at the source
  coordinates each ``align_corners`` convention defines (torch clamps negative ones to 0; beyond the
  last pixel both read the edge: ``mode="nearest"``);
- ``refimpl.softmax`` against ``scipy.special.softmax``;
- ``refimpl.max_pool2d`` against ``scipy.ndimage.maximum_filter`` with -inf outside the image,
  sampled every stride-th pixel.
"""

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refimpl
import refimpl.head
from tests.conftest import rel_err

FLOATS = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64)


def conv_oracle(x, weight, bias, stride, padding, dilation):
    """y[n, o] = b[o] + sum_i correlate(pad(x[n, i]), dilate(W[o, i]), 'valid')[::s, ::s]."""
    nb, C_in = x.shape[:2]
    C_out, _, kh, kw = weight.shape
    d = dilation
    planes = []
    for n in range(nb):
        for o in range(C_out):
            acc = 0.0
            for i in range(C_in):
                k = np.zeros((d * (kh - 1) + 1, d * (kw - 1) + 1))
                k[::d, ::d] = weight[o, i]                          # the kernel with d - 1 zeros between taps
                xp = np.pad(x[n, i], padding)
                acc = acc + scipy.signal.correlate(xp, k, mode="valid", method="direct")[::stride, ::stride]
            planes.append(acc + (bias[o] if bias is not None else 0.0))
    Ho, Wo = planes[0].shape
    return np.stack(planes).reshape(nb, C_out, Ho, Wo)


@st.composite
def conv_problems(draw):
    k = draw(st.sampled_from([1, 2, 3, 5, 7]))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.integers(0, 4))
    reach = dilation * (k - 1) + 1                                  # the kernel's extent
    smallest = max(1, reach - 2 * padding)                          # one output pixel
    H, W = draw(st.integers(smallest, smallest + 8)), draw(st.integers(smallest, smallest + 8))
    nb, C_in, C_out = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    x = draw(hnp.arrays(np.float64, (nb, C_in, H, W), elements=FLOATS))
    w = draw(hnp.arrays(np.float64, (C_out, C_in, k, k), elements=FLOATS))
    b = draw(st.none() | hnp.arrays(np.float64, (C_out,), elements=FLOATS))
    depth = draw(st.sampled_from([1, 2, 5, refimpl.layers._GEMM_DEPTH]))  # how many rows conv2d stacks per product
    return x, w, b, stride, padding, dilation, depth


@given(conv_problems())
def test_conv2d_matches_scipy_correlate(problem):
    x, w, b, stride, padding, dilation, depth = problem
    saved, refimpl.layers._GEMM_DEPTH = refimpl.layers._GEMM_DEPTH, depth
    try:
        ours = refimpl.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
    finally:
        refimpl.layers._GEMM_DEPTH = saved
    want = conv_oracle(x, w, b, stride, padding, dilation)
    assert ours.shape == want.shape
    np.testing.assert_allclose(ours, want, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("C_in,k,stride,padding,dilation", [
    (3, 7, 2, 3, 1),        # the plain stem: all 49 taps in one product
    (200, 3, 2, 1, 1),      # a strided 3x3 (layer2's first block): taps in groups of 5, then 4
    (1100, 3, 1, 4, 4),     # a dilated 3x3 of layer4 at output stride 8, wide: one tap per product
    (300, 1, 2, 0, 1),      # a strided 1x1 downsample shortcut
])
def test_conv2d_resnet_shapes_match_scipy(C_in, k, stride, padding, dilation):
    assert refimpl.layers._GEMM_DEPTH == 1024, "the comments above count taps per product for 1024"
    rng = np.random.default_rng(C_in + k)
    x = rng.standard_normal((1, C_in, 11, 9))
    w = rng.standard_normal((2, C_in, k, k))
    ours = refimpl.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    assert rel_err(ours, conv_oracle(x, w, None, stride, padding, dilation)) <= 1e-12


def test_conv2d_same_padding_is_dilation_times_half_kernel():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 2, 9, 8)), rng.standard_normal((3, 2, 3, 3))
    ours = refimpl.conv2d(x, w, dilation=3)                        # padding=None: 'same', 3 * (3 // 2)
    assert ours.shape == (1, 3, 9, 8)
    assert rel_err(ours, conv_oracle(x, w, None, 1, 3, 3)) <= 1e-12


def source_coords(n_in, n_out, align_corners):
    """Where output pixel i samples the input, as torch defines it for mode='bilinear'."""
    i = np.arange(n_out)
    if align_corners:
        return i * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    return np.maximum((i + 0.5) * n_in / n_out - 0.5, 0.0)        # negative coordinates read pixel 0


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 7), st.integers(1, 7)),
                  elements=FLOATS),
       st.integers(1, 20), st.integers(1, 20), st.booleans())
def test_bilinear_matches_scipy_map_coordinates(x, Ho, Wo, align_corners):
    H, W = x.shape[2:]
    rows, cols = np.meshgrid(source_coords(H, Ho, align_corners), source_coords(W, Wo, align_corners),
                             indexing="ij")
    want = np.stack([[scipy.ndimage.map_coordinates(plane, [rows, cols], order=1, mode="nearest")
                      for plane in image] for image in x])
    ours = refimpl.interpolate_bilinear(x, (Ho, Wo), align_corners=align_corners)
    assert ours.shape == want.shape
    np.testing.assert_allclose(ours, want, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(x).max()))


def test_bilinear_conventions_differ_and_keep_dtype():
    """The two conventions give different pictures (so a swapped flag cannot pass unnoticed)."""
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    a = refimpl.interpolate_bilinear(x, (6, 8), align_corners=True)
    b = refimpl.interpolate_bilinear(x, (6, 8), align_corners=False)
    assert a.dtype == b.dtype == np.float32
    assert a[0, 0, -1, -1] == 11 and a[0, 0, 0, 1] == np.float32(3 / 7)   # corners coincide
    assert b[0, 0, 0, 1] == np.float32(0.25)                            # x = (1 + 0.5) / 2 - 0.5 = 0.25


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                  elements=st.floats(-50, 50, allow_nan=False, width=64)), st.data())
def test_softmax_matches_scipy(x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    np.testing.assert_allclose(refimpl.softmax(x, axis=axis), scipy.special.softmax(x, axis=axis),
                               rtol=1e-12, atol=1e-300)
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(refimpl.softmax(x32, axis=axis), scipy.special.softmax(x32, axis=axis),
                               rtol=1e-5, atol=1e-37)


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 9), st.integers(1, 9)),
                  elements=st.floats(-100, 100, allow_nan=False, width=64)),
       st.sampled_from([(3, 2, 1), (3, 1, 1), (5, 2, 2), (1, 2, 0), (3, 3, 1)]))
def test_max_pool_matches_scipy_maximum_filter(x, pool):
    k, s, p = pool                                   # centred windows: padding = k // 2
    want = scipy.ndimage.maximum_filter(x, size=(1, 1, k, k), mode="constant", cval=-np.inf)[:, :, ::s, ::s]
    ours = refimpl.max_pool2d(x, k, s, p)
    assert ours.shape == want.shape
    np.testing.assert_array_equal(ours, want)


def test_max_pool_padding_never_wins():
    x = -np.ones((1, 1, 4, 4)) * np.arange(1, 17).reshape(4, 4)        # all negative: a zero pad would win
    assert np.array_equal(refimpl.max_pool2d(x), scipy.ndimage.maximum_filter(
        x, size=(1, 1, 3, 3), mode="constant", cval=-np.inf)[:, :, ::2, ::2])
    assert refimpl.max_pool2d(x).max() == -1.0
