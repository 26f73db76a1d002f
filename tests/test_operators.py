"""Restoration operators: the implicit SVD is the operator the user asked for.

For every operator: H equals the direct operation (pooling, interpolation, convolution, selection,
weighted sum, matmul), the SVD's pieces are orthonormal (VᵀV = I, UᵀU = I), U Σ Vᵀ built from the
implicit pieces equals the direct H (so singular values are paired with the right vectors), and
H H⁺ H = H.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from nested_diffusion.restoration import (Colorization, Deblur, Dense, Denoising, Inpainting, SuperResolution,
                                          residual_ratio)

G = lambda seed=0: torch.Generator().manual_seed(seed)  # noqa: E731


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=G(seed), dtype=torch.float64)


@pytest.fixture(autouse=True)
def _quiet_even_kernel_warning():
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
        yield


def conv_same(x, kernel2d):
    """True 2-D convolution with zero padding, output of the input's size (reference)."""
    h, w = x.shape[-2:]
    out = F.conv2d(x.reshape(-1, 1, h, w), kernel2d.flip(0, 1)[None, None], padding="same")
    return out.reshape(x.shape)


MASK = torch.rand(3, 6, 5, generator=G(7)) < 0.4
K_H = torch.tensor([0.1, 0.5, 0.3, 0.1], dtype=torch.float64)  # even length, asymmetric
K_W = torch.tensor([0.2, 0.7, 0.1], dtype=torch.float64)

# (operator, item shape, direct H)
CASES = {
    "inpainting": (Inpainting(MASK), (3, 6, 5), lambda x: x.reshape(len(x), -1)[:, MASK.reshape(-1)]),
    "denoising": (Denoising(), (2, 3, 5), lambda x: x),
    "sr-avg": (SuperResolution(2), (3, 6, 4), lambda x: F.avg_pool2d(x, 2)),
    "sr-avg-3": (SuperResolution(3), (2, 9, 6), lambda x: F.avg_pool2d(x, 3)),
    "sr-bicubic": (SuperResolution(2, "bicubic"), (3, 8, 6),
                   lambda x: F.interpolate(x, size=(4, 3), mode="bicubic", antialias=True, align_corners=False)),
    "sr-bicubic-4": (SuperResolution(4, "bicubic"), (1, 12, 16),
                     lambda x: F.interpolate(x, size=(3, 4), mode="bicubic", antialias=True, align_corners=False)),
    "deblur-1d": (Deblur(K_H), (3, 7, 5), lambda x: conv_same(x, K_H[:, None] * K_H[None, :])),
    "deblur-2-kernels": (Deblur(K_H, K_W), (3, 7, 5), lambda x: conv_same(x, K_H[:, None] * K_W[None, :])),
    "deblur-2d-rank1": (Deblur(K_H[:, None] * K_W[None, :]), (3, 5, 6),
                        lambda x: conv_same(x, K_H[:, None] * K_W[None, :])),
    "colorization": (Colorization(), (3, 4, 5), lambda x: x.mean(1, keepdim=True)),
    "colorization-luma": (Colorization((0.299, 0.587, 0.114)), (3, 4, 5),
                          lambda x: (x * torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype)[:, None, None]).sum(1, keepdim=True)),
    "dense": (Dense(rand(7, 12, seed=3)), (3, 4), lambda x: x.reshape(len(x), -1) @ rand(7, 12, seed=3).T),
    "dense-tall": (Dense(rand(15, 6, seed=4)), (6,), lambda x: x @ rand(15, 6, seed=4).T),
    "dense-rank-deficient": (Dense(rand(8, 3, seed=5) @ rand(3, 10, seed=6)), (10,),
                             lambda x: x @ (rand(8, 3, seed=5) @ rand(3, 10, seed=6)).T),
}


def dense_pieces(op, shape):
    """V (n×n), U (m×m) and Σ (m×n) as dense matrices, built from the implicit rotations."""
    n = math.prod(shape)
    m = math.prod(op.measurement_shape(shape))
    V = op.V(torch.eye(n, dtype=torch.float64), shape).reshape(n, n).T  # column i = V e_i
    U = op.U(torch.eye(m, dtype=torch.float64), shape).reshape(m, m).T
    s = op.singular_values(shape)
    Sigma = torch.zeros(m, n, dtype=torch.float64)
    Sigma[range(s.numel()), range(s.numel())] = s
    return V, U, Sigma


@pytest.mark.parametrize("name", list(CASES))
def test_operator_equals_the_direct_operation(name):
    op, shape, direct = CASES[name]
    x = rand(4, *shape)  # batched
    y = op(x)
    assert y.shape == (4, *op.measurement_shape(shape))
    torch.testing.assert_close(y, direct(x).reshape(y.shape), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_svd_pieces_are_orthonormal_and_reproduce_H(name):
    op, shape, direct = CASES[name]
    V, U, Sigma = dense_pieces(op, shape)
    eye = lambda k: torch.eye(k, dtype=torch.float64)  # noqa: E731
    torch.testing.assert_close(V.T @ V, eye(V.shape[0]), atol=1e-12, rtol=0)
    torch.testing.assert_close(U.T @ U, eye(U.shape[0]), atol=1e-12, rtol=0)
    H = op.matrix(shape)
    n = math.prod(shape)
    H_direct = direct(torch.eye(n, dtype=torch.float64).reshape(n, *shape)).reshape(n, -1).T
    torch.testing.assert_close(H, H_direct, atol=1e-12, rtol=0)
    torch.testing.assert_close(U @ Sigma @ V.T, H_direct, atol=1e-12, rtol=0)
    # Vt / Ut are the transposes of V / U
    x = rand(2, *shape, seed=1)
    torch.testing.assert_close(op.Vt(x), x.reshape(2, -1) @ V, atol=1e-12, rtol=0)
    torch.testing.assert_close(op.V(op.Vt(x), shape), x, atol=1e-12, rtol=0)
    y = op(x)
    torch.testing.assert_close(op.Ut(y), y.reshape(2, -1) @ U, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_pseudo_inverse(name):
    op, shape, _ = CASES[name]
    x = rand(3, *shape, seed=2)
    y = op(x)
    torch.testing.assert_close(op(op.pinv(y, shape)), y, atol=1e-10, rtol=0)  # H H⁺ H = H
    H = op.matrix(shape)
    y_any = rand(3, *y.shape[1:], seed=8)  # also off the range of H: H⁺ is the least-squares pseudo-inverse
    expected = y_any.reshape(3, -1) @ torch.linalg.pinv(H).T
    torch.testing.assert_close(op.pinv(y_any, shape).reshape(3, -1), expected, atol=1e-9, rtol=1e-8)


def test_rank_deficiency_gives_exact_zero_singular_values():
    op, shape, _ = CASES["dense-rank-deficient"]
    s = op.singular_values(shape)
    assert s.numel() == 8 and int((s > 0).sum()) == 3 and (s[3:] == 0).all()


def test_deblur_keeps_every_kernel_tap():
    """The reference DDRM port's kernel loop dropped the last tap: a kernel that is only its last tap
    would then blur to zero. Here it is a pure shift: (Hx)[i] = x[i - 3 + L//2] = x[i - 1]."""
    kernel = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    op = Deblur(kernel, torch.tensor([1.0], dtype=torch.float64))  # blur along the height only
    x = rand(1, 1, 9, 4)
    y = op(x)
    torch.testing.assert_close(y[0, 0, 1:], x[0, 0, :-1], atol=1e-12, rtol=0)
    torch.testing.assert_close(y[0, 0, 0], torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(y, conv_same(x, kernel[:, None]), atol=1e-12, rtol=0)


def test_separable_deblur_pairs_singular_values_with_channels():
    """The other known port bug: singular values ordered for one channel layout while V interleaves
    channels. Each channel must be blurred by its own content only, with distinct kernels per axis."""
    op = Deblur(K_H, K_W)
    x = torch.zeros(1, 3, 7, 5, dtype=torch.float64)
    x[0, 1] = rand(7, 5)  # only the middle channel is non-zero
    y = op(x)
    assert (y[0, 0] == 0).all() and (y[0, 2] == 0).all()
    torch.testing.assert_close(y[0, 1], conv_same(x[:, 1:2], K_H[:, None] * K_W[None, :])[0, 0])
    s = op.singular_values((3, 7, 5))
    assert s.numel() == 3 * 35 and torch.equal(s[:35], s[35:70]) and torch.equal(s[:35], s[70:])


def test_inpainting_measurement_is_the_observed_entries_in_row_major_order():
    mask = torch.tensor([[True, False, True], [False, True, False]])
    x = torch.arange(6, dtype=torch.float64).reshape(1, 2, 3)
    op = Inpainting(mask)
    assert op(x).tolist() == [[0.0, 2.0, 4.0]] and op.measurement_shape((2, 3)) == (3,)
    assert op.pinv(op(x)).tolist() == [[[0.0, 0.0, 2.0], [0.0, 4.0, 0.0]]]
    assert Inpainting(mask.int()).num_observed == 3


def test_shapes_are_inferred_for_pinv():
    assert SuperResolution(4).input_shape((3, 2, 5)) == (3, 8, 20)
    assert Colorization().input_shape((1, 4, 6)) == (3, 4, 6)
    assert Dense(rand(3, 8)).input_shape((3,)) == (8,)
    op = SuperResolution(2)
    assert op.pinv(op(rand(2, 3, 8, 6))).shape == (2, 3, 8, 6)


def test_measure_and_dtype_device_casts():
    op = SuperResolution(2)
    x = rand(5, 1, 8, 8)
    y1, y2 = op.measure(x, 0.1, G(3)), op.measure(x, 0.1, G(3))
    assert torch.equal(y1, y2) and not torch.equal(y1, op(x))
    assert torch.equal(op.measure(x, 0.0), op(x))
    torch.testing.assert_close((y1 - op(x)).std().item(), 0.1, atol=0.02, rtol=0)
    y32 = op(x.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32, op(x).float())


def test_residual_ratio():
    op = Inpainting(torch.ones(4, 4, dtype=torch.bool))
    x = torch.zeros(10_000, 4, 4, dtype=torch.float64)
    y = op.measure(x, 0.2, G(1))
    assert abs(residual_ratio(op, x, y, 0.2) - 1.0) < 0.02
    assert residual_ratio(op, x, op(x), 0.2) == 0.0
    with pytest.raises(ValueError, match="sigma_y > 0"):
        residual_ratio(op, x, y, 0.0)


@pytest.mark.parametrize("make,match", [
    (lambda: Inpainting(torch.zeros(2, 3, dtype=torch.bool)), "observes nothing"),
    (lambda: Inpainting(torch.rand(2, 3)), "boolean"),
    (lambda: Dense(torch.zeros(3, 4)), "measures nothing"),
    (lambda: Dense(torch.ones(3)), "2-D"),
    (lambda: Dense([[1.0, float("nan")]]), "NaN"),
    (lambda: Deblur(torch.zeros(5)), "all zeros"),
    (lambda: Deblur(torch.zeros(3, 3)), "all zeros"),
    (lambda: Deblur(torch.eye(3)), "not separable"),
    (lambda: Deblur(torch.ones(2, 2, 2)), "1-D or 2-D"),
    (lambda: SuperResolution(0), "factor"),
    (lambda: SuperResolution(2, "nearest"), "kind"),
    (lambda: Colorization((0.0, 0.0, 0.0)), "all zero"),
    (lambda: Colorization((1.0,)), "one number per channel"),
])
def test_bad_operator_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_operator_shape_mismatch_errors():
    with pytest.raises(ValueError, match="divisible"):
        SuperResolution(2)(rand(1, 3, 7, 8))
    with pytest.raises(ValueError, match="mask has shape"):
        Inpainting(MASK)(rand(1, 3, 6, 6))
    with pytest.raises(ValueError, match="12 columns"):
        Dense(rand(7, 12))(rand(2, 13))
    with pytest.raises(ValueError, match="Colorization expects"):
        Colorization()(rand(1, 4, 5, 5))
    with pytest.raises(ValueError, match="sigma_y"):
        Denoising().measure(rand(1, 3), -0.1)
    with pytest.raises(ValueError, match="measurement must have shape"):
        SuperResolution(2).Ut(rand(1, 3, 4, 4), (3, 6, 6))
