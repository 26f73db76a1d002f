"""Linear degradation operators y = Hx given implicitly by their SVD H = U Σ Vᵀ (DDRM, Kawar et al. 2022).

Every operator acts on a batch ``x`` of shape ``(batch, *item_shape)`` and never forms a dense
matrix for an image: ``Vt(x)`` (batch, n) and ``V(z, shape)`` rotate into and out of the spectral
space, ``Ut(y)`` (batch, m) and ``U(z, shape)`` do the same for measurements, and
``singular_values(shape)`` (r,) holds s_i. Convention (DDRM's): the first r spectral components of
``Vt`` pair with the first r of ``Ut``, so Hx = U(s · Vt(x)[:, :r]); components r..n-1 are not
measured (s = 0). Singular values below float64 round-off (s_max · max(m, n) · ε) are stored as 0,
so a rank-deficient ``Dense`` matrix has exact zeros.

``op(x)`` returns Hx in the operator's own measurement shape: ``(batch, m)`` for :class:`Dense` and
:class:`Inpainting` (observed entries in row-major order of the mask), the small image for
:class:`SuperResolution`, the gray image ``(batch, 1, h, w)`` for :class:`Colorization`, and the
input's shape for :class:`Deblur` and :class:`Denoising`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..samplers.noise import randn_like

__all__ = ["LinearOperator", "Inpainting", "SuperResolution", "Deblur", "Colorization", "Denoising", "Dense",
           "check_sigma_y", "residual_ratio"]

Shape = tuple[int, ...]


def _truncate(s: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """Singular values below float64 round-off are exact zeros (numpy's ``matrix_rank`` rule)."""
    if s.numel() == 0:
        return s
    return torch.where(s > s.max() * max(m, n) * torch.finfo(torch.float64).eps, s, torch.zeros_like(s))


def _as_float64(value: Any, name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a real tensor or sequence of numbers, got {type(value).__name__}") from e
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


class LinearOperator:
    """Base class: a linear H with an implicit SVD. Subclasses implement ``measurement_shape``,
    ``input_shape`` and ``_factors(shape)`` plus the four rotations ``_vt``, ``_v``, ``_ut``, ``_u``
    over float64 factors (cached per item shape, cast to the input's device and dtype)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, dict[str, torch.Tensor]] = {}

    # -- subclass interface ------------------------------------------------------------------
    def measurement_shape(self, shape: Shape) -> Shape:
        """The shape of one item's measurement for items of ``shape``; ValueError if H cannot act on them."""
        raise NotImplementedError

    def input_shape(self, measurement_shape: Shape) -> Shape:
        """The item shape whose measurement has ``measurement_shape`` (for :meth:`pinv`)."""
        raise NotImplementedError

    def _factors(self, shape: Shape) -> dict[str, torch.Tensor]:
        """float64 CPU tensors describing the SVD for items of ``shape``; must include ``"s"`` (r,)."""
        raise NotImplementedError

    def _vt(self, f: dict, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _v(self, f: dict, z: torch.Tensor, shape: Shape) -> torch.Tensor:
        raise NotImplementedError

    def _ut(self, f: dict, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _u(self, f: dict, z: torch.Tensor, shape: Shape) -> torch.Tensor:
        raise NotImplementedError

    # -- factors ------------------------------------------------------------------------------
    def factors(self, shape: Shape, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
        """The SVD factors for items of ``shape`` on ``device``/``dtype`` (index tensors stay int64)."""
        shape = tuple(int(d) for d in shape)
        key = (shape, str(torch.device(device or "cpu")), dtype)
        if key not in self._cache:
            base_key = (shape, "cpu", torch.float64)
            if base_key not in self._cache:
                self.measurement_shape(shape)  # validates
                self._cache[base_key] = self._factors(shape)
            self._cache[key] = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                                for k, v in self._cache[base_key].items()}
        return self._cache[key]

    def singular_values(self, shape: Shape, device: torch.device | str | None = None,
                        dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """s (r,), paired with the first r spectral components (not sorted; zeros allowed)."""
        return self.factors(shape, device, dtype)["s"]

    def _f(self, x: torch.Tensor, shape: Shape) -> dict[str, torch.Tensor]:
        return self.factors(shape, x.device, x.dtype)

    # -- the SVD, batched ---------------------------------------------------------------------
    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        """Vᵀx: items ``(batch, *shape)`` → spectral coefficients ``(batch, n)``."""
        return self._vt(self._f(x, x.shape[1:]), x)

    def V(self, z: torch.Tensor, shape: Shape) -> torch.Tensor:
        """Vz: spectral ``(batch, n)`` → items ``(batch, *shape)``."""
        return self._v(self._f(z, shape), z, tuple(shape))

    def Ut(self, y: torch.Tensor, shape: Shape | None = None) -> torch.Tensor:
        """Uᵀy: measurements → ``(batch, m)``; ``shape`` is the item shape (inferred if omitted)."""
        shape = self.input_shape(tuple(y.shape[1:])) if shape is None else tuple(shape)
        self._check_measurement(y, shape)
        return self._ut(self._f(y, shape), y)

    def U(self, z: torch.Tensor, shape: Shape) -> torch.Tensor:
        """Uz: ``(batch, m)`` → measurements for items of ``shape``."""
        return self._u(self._f(z, shape), z, tuple(shape))

    # -- the operator -------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
            raise TypeError("x must be a floating-point tensor (batch, *item_shape)")
        self.measurement_shape(tuple(x.shape[1:]))

    def _check_measurement(self, y: torch.Tensor, shape: Shape) -> None:
        expected = self.measurement_shape(shape)
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise TypeError("the measurement must be a floating-point tensor")
        if y.ndim < 1 or tuple(y.shape[1:]) != expected:
            raise ValueError(f"the measurement must have shape (batch, {', '.join(map(str, expected))}) for items "
                             f"of shape {shape}, got {tuple(y.shape)}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Hx = U(s · Vᵀx) in the measurement shape (the implicit SVD *is* the operator)."""
        self._check_input(x)
        shape = tuple(x.shape[1:])
        f = self._f(x, shape)
        s = f["s"]
        z = self._vt(f, x)[:, : s.numel()] * s
        m = math.prod(self.measurement_shape(shape))
        if m > s.numel():  # more measurements than unknowns: U's last columns are orthogonal to the range
            z = torch.cat([z, z.new_zeros(len(z), m - s.numel())], 1)
        return self._u(f, z, shape)

    def measure(self, x: torch.Tensor, sigma_y: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """y = Hx + σ_y n, n ~ N(0, I) drawn from ``generator`` (σ_y on the data's scale, [-1, 1] for images)."""
        sigma_y = check_sigma_y(sigma_y)
        y = self(x)
        return y + sigma_y * randn_like(y, generator) if sigma_y > 0 else y

    def pinv(self, y: torch.Tensor, shape: Shape | None = None) -> torch.Tensor:
        """H⁺y = V Σ⁺ Uᵀy (zero in the unmeasured components); ``shape``: the item shape (inferred if omitted)."""
        shape = self.input_shape(tuple(y.shape[1:])) if shape is None else tuple(shape)
        f = self._f(y, shape)
        s = f["s"]
        z = self._ut(f, y)[:, : s.numel()]
        inv = torch.where(s > 0, 1.0 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
        full = torch.zeros(y.shape[0], math.prod(shape), device=y.device, dtype=y.dtype)
        full[:, : s.numel()] = z * inv
        return self._v(f, full, shape)

    def matrix(self, shape: Shape) -> torch.Tensor:
        """H as a dense float64 ``(m, n)`` matrix for items of ``shape`` (tests and small oracles only)."""
        shape = tuple(shape)
        n = math.prod(shape)
        basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
        return self(basis).reshape(n, -1).T.contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_sigma_y(sigma_y: Any) -> float:
    """σ_y must be a finite real number ≥ 0."""
    if isinstance(sigma_y, bool) or not isinstance(sigma_y, (int, float)):
        raise TypeError(f"sigma_y must be a number >= 0, got {type(sigma_y).__name__}")
    if not math.isfinite(sigma_y) or sigma_y < 0:
        raise ValueError(f"sigma_y must be a finite number >= 0 (the measurement noise std on the data's "
                         f"scale), got {sigma_y}")
    return float(sigma_y)


# -- element selections ------------------------------------------------------------------------
class Inpainting(LinearOperator):
    """Keep the observed entries: ``mask`` has one item's shape, True = observed. H is a selection:
    V permutes the observed entries (row-major order) first, U = I, s = 1."""

    def __init__(self, mask: Any) -> None:
        super().__init__()
        mask = torch.as_tensor(mask).detach().cpu()
        if mask.dtype != torch.bool:
            if mask.is_floating_point() or mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
                raise TypeError("mask must be a boolean tensor (or of 0/1 integers), True = observed")
            mask = mask.bool()
        if mask.ndim == 0:
            raise ValueError("mask must have one item's shape, e.g. (channels, height, width)")
        if not mask.any():
            raise ValueError("mask observes nothing (all False): there is no measurement to restore from")
        self.mask = mask
        flat = mask.reshape(-1)
        self.observed = flat.nonzero().squeeze(1)
        self.perm = torch.cat([self.observed, (~flat).nonzero().squeeze(1)])

    @property
    def num_observed(self) -> int:
        return self.observed.numel()

    def measurement_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != tuple(self.mask.shape):
            raise ValueError(f"Inpainting mask has shape {tuple(self.mask.shape)} but the items have shape {tuple(shape)}")
        return (self.num_observed,)

    def input_shape(self, measurement_shape: Shape) -> Shape:
        return tuple(self.mask.shape)

    def _factors(self, shape: Shape) -> dict[str, torch.Tensor]:
        return {"s": torch.ones(self.num_observed, dtype=torch.float64), "perm": self.perm,
                "inv": torch.argsort(self.perm)}

    def _vt(self, f, x):
        return x.reshape(len(x), -1)[:, f["perm"]]

    def _v(self, f, z, shape):
        return z[:, f["inv"]].reshape(len(z), *shape)

    def _ut(self, f, y):
        return y

    def _u(self, f, z, shape):
        return z

    def __repr__(self) -> str:
        return f"Inpainting(observed {self.num_observed}/{self.mask.numel()})"


class Denoising(LinearOperator):
    """H = I on items of any shape (y = x + σ_y n)."""

    def measurement_shape(self, shape: Shape) -> Shape:
        return tuple(shape)

    def input_shape(self, measurement_shape: Shape) -> Shape:
        return tuple(measurement_shape)

    def _factors(self, shape):
        return {"s": torch.ones(math.prod(shape), dtype=torch.float64)}

    def _vt(self, f, x):
        return x.reshape(len(x), -1)

    def _v(self, f, z, shape):
        return z.reshape(len(z), *shape)

    _ut = _vt
    _u = _v


class Dense(LinearOperator):
    """Any ``(m, n)`` matrix acting on flattened items of any shape with n entries; its SVD is
    computed once (``torch.linalg.svd``). Rank deficiency is fine (zero singular values are
    unmeasured directions); the zero matrix is an error."""

    def __init__(self, matrix: Any) -> None:
        super().__init__()
        A = _as_float64(matrix, "matrix")
        if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
            raise ValueError(f"matrix must be 2-D (m rows, n columns), got shape {tuple(A.shape)}")
        self.matrix_ = A
        U, s, Vh = torch.linalg.svd(A, full_matrices=True)
        self._svd = {"s": _truncate(s, *A.shape), "Ut": U.T.contiguous(), "Uc": U, "V": Vh.T.contiguous(), "Vh": Vh}
        if not (self._svd["s"] > 0).any():
            raise ValueError("matrix is zero: it measures nothing")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix_.shape)

    def measurement_shape(self, shape: Shape) -> Shape:
        if math.prod(shape) != self.shape[1]:
            raise ValueError(f"Dense matrix has {self.shape[1]} columns but the items have shape {tuple(shape)} "
                             f"({math.prod(shape)} entries)")
        return (self.shape[0],)

    def input_shape(self, measurement_shape: Shape) -> Shape:
        return (self.shape[1],)

    def _factors(self, shape):
        return self._svd

    def _vt(self, f, x):
        return x.reshape(len(x), -1) @ f["V"]

    def _v(self, f, z, shape):
        return (z @ f["Vh"]).reshape(len(z), *shape)

    def _ut(self, f, y):
        return y @ f["Uc"]

    def _u(self, f, z, shape):
        return z @ f["Ut"]

    def __repr__(self) -> str:
        return f"Dense({self.shape[0]}×{self.shape[1]}, rank {int((self._svd['s'] > 0).sum())})"


class Colorization(LinearOperator):
    """RGB → gray: y = Σ_c w_c x_c per pixel, items ``(channels, h, w)``, measurement ``(1, h, w)``.
    ``weights`` default to equal thirds (DDRM's convention); ITU-R 601 luma is (0.299, 0.587, 0.114).
    Per pixel H = wᵀ, so s = ‖w‖, V's first row is w/‖w‖ and the rest completes it (one C×C SVD)."""

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        w = torch.full((3,), 1.0 / 3.0, dtype=torch.float64) if weights is None else _as_float64(weights, "weights")
        if w.ndim != 1 or w.numel() < 2:
            raise ValueError(f"weights must be one number per channel (at least 2), got shape {tuple(w.shape)}")
        if not (w != 0).any():
            raise ValueError("weights are all zero: the gray image would measure nothing")
        self.weights = w
        U, s, Vh = torch.linalg.svd(w[None], full_matrices=True)
        self._svd = {"u": U.reshape(()), "norm": s[0], "Vh": Vh}

    def measurement_shape(self, shape: Shape) -> Shape:
        C = self.weights.numel()
        if len(shape) != 3 or shape[0] != C:
            raise ValueError(f"Colorization expects items of shape ({C}, height, width), got {tuple(shape)}")
        return (1, *shape[1:])

    def input_shape(self, measurement_shape: Shape) -> Shape:
        if len(measurement_shape) != 3 or measurement_shape[0] != 1:
            raise ValueError(f"a gray measurement has shape (1, height, width), got {tuple(measurement_shape)}")
        return (self.weights.numel(), *measurement_shape[1:])

    def _factors(self, shape):
        return {**self._svd, "s": self._svd["norm"].expand(shape[1] * shape[2]).clone()}

    def _vt(self, f, x):
        return torch.einsum("kc,bchw->bkhw", f["Vh"], x).reshape(len(x), -1)

    def _v(self, f, z, shape):
        return torch.einsum("kc,bkhw->bchw", f["Vh"], z.reshape(len(z), *shape))

    def _ut(self, f, y):
        return y.reshape(len(y), -1) * f["u"]

    def _u(self, f, z, shape):
        return (z * f["u"]).reshape(len(z), 1, *shape[1:])

    def __repr__(self) -> str:
        return f"Colorization(weights={[round(v, 4) for v in self.weights.tolist()]})"


# -- separable operators: H = A_h ⊗ A_w on the last two axes ---------------------------------
class _Separable(LinearOperator):
    """H acts on items ``(*lead, h, w)`` as X ↦ A_h X A_wᵀ for each leading index (channel), with
    A_h (m_h × h), A_w (m_w × w), m ≤ n per axis. SVD: the Kronecker product of the per-axis SVDs,
    s_(l,i,j) = s_h,i · s_w,j for i < m_h, j < m_w; the spectral vector lists these paired
    components first in (l, i, j) order, then the unmeasured ones, also in (l, i, j) order."""

    def _axis_matrix(self, n: int) -> torch.Tensor:
        """The 1-D operator along an axis of length n (float64, m × n)."""
        raise NotImplementedError

    def _axis_matrices(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._axis_matrix(h), self._axis_matrix(w)

    def _spatial(self, shape: Shape) -> Shape:
        if len(shape) < 2:
            raise ValueError(f"{type(self).__name__} acts on images (…, height, width), got item shape {tuple(shape)}")
        return tuple(shape)

    def _factors(self, shape):
        lead, h, w = math.prod(shape[:-2]), shape[-2], shape[-1]
        A_h, A_w = self._axis_matrices(h, w)
        U_h, s_h, Vh_h = torch.linalg.svd(A_h, full_matrices=True)
        U_w, s_w, Vh_w = torch.linalg.svd(A_w, full_matrices=True)
        m_h, m_w = A_h.shape[0], A_w.shape[0]
        index = torch.arange(lead * h * w).reshape(lead, h, w)
        paired = torch.zeros(lead, h, w, dtype=torch.bool)
        paired[:, :m_h, :m_w] = True
        perm = torch.cat([index[paired], index[~paired]])
        s = (s_h[:, None] * s_w[None, :]).expand(lead, m_h, m_w).reshape(-1)
        return {"s": _truncate(s, lead * m_h * m_w, lead * h * w), "perm": perm, "inv": torch.argsort(perm),
                "U_h": U_h, "U_w": U_w, "V_h": Vh_h.T.contiguous(), "V_w": Vh_w.T.contiguous()}

    def _vt(self, f, x):
        X = x.reshape(len(x), -1, *x.shape[-2:])
        return (f["V_h"].T @ X @ f["V_w"]).reshape(len(x), -1)[:, f["perm"]]

    def _v(self, f, z, shape):
        C = z[:, f["inv"]].reshape(len(z), -1, *shape[-2:])
        return (f["V_h"] @ C @ f["V_w"].T).reshape(len(z), *shape)

    def _ut(self, f, y):
        Y = y.reshape(len(y), -1, *y.shape[-2:])
        return (f["U_h"].T @ Y @ f["U_w"]).reshape(len(y), -1)

    def _u(self, f, z, shape):
        m_h, m_w = f["U_h"].shape[0], f["U_w"].shape[0]
        Z = z.reshape(len(z), -1, m_h, m_w)
        return (f["U_h"] @ Z @ f["U_w"].T).reshape(len(z), *shape[:-2], m_h, m_w)


def _cubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = -0.5: PIL, PyTorch and MATLAB's ``imresize``)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


class SuperResolution(_Separable):
    """Downsampling by an integer ``factor`` on the last two axes (height and width divisible by it).

    ``kind="avg"``: mean of each factor × factor block (``avg_pool2d``). ``kind="bicubic"``:
    antialiased bicubic downsampling, the kernel stretched by the factor and renormalised at the
    borders — exactly ``F.interpolate(mode="bicubic", antialias=True)`` and PIL's ``resize``.
    """

    KINDS = ("avg", "bicubic")

    def __init__(self, factor: int, kind: str = "avg") -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, int):
            raise TypeError(f"factor must be an integer >= 1, got {type(factor).__name__}")
        if factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got {factor}")
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        self.factor, self.kind = factor, kind

    def measurement_shape(self, shape: Shape) -> Shape:
        shape = self._spatial(shape)
        h, w = shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"SuperResolution(factor={self.factor}) needs height and width divisible by "
                             f"{self.factor}, got {h}×{w}")
        return (*shape[:-2], h // self.factor, w // self.factor)

    def input_shape(self, measurement_shape: Shape) -> Shape:
        s = self._spatial(measurement_shape)
        return (*s[:-2], s[-2] * self.factor, s[-1] * self.factor)

    def _axis_matrix(self, n: int) -> torch.Tensor:
        f, m = self.factor, n // self.factor
        A = torch.zeros(m, n, dtype=torch.float64)
        if self.kind == "avg":
            for i in range(m):
                A[i, i * f:(i + 1) * f] = 1.0 / f
            return A
        support = 2.0 * f  # the cubic kernel's radius 2, stretched by the factor
        for i in range(m):
            center = f * (i + 0.5)
            lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n)
            taps = _cubic((torch.arange(lo, hi, dtype=torch.float64) - center + 0.5) / f)
            A[i, lo:hi] = taps / taps.sum()
        return A

    def __repr__(self) -> str:
        return f"SuperResolution(factor={self.factor}, kind={self.kind!r})"


class Deblur(_Separable):
    """Convolution with a separable blur kernel on the last two axes, zero boundary, output of the
    input's size: (Hx)[i] = Σ_v k[v] x[i - v + L//2] along each axis (L taps; for an odd L the
    kernel's centre tap sits on the pixel, as in ``conv2d(x, flip(k), padding="same")``).

    ``kernel``: 1-D (the same along height and width; with ``kernel_width`` it is the height
    kernel only) or a 2-D kernel of rank 1 (factored by its SVD). A non-separable 2-D kernel (e.g. motion
    blur) is refused: its SVD has no cheap implicit form with a zero boundary.
    """

    def __init__(self, kernel: Any, kernel_width: Any = None) -> None:
        super().__init__()
        k = _as_float64(kernel, "kernel")
        if kernel_width is not None:
            if k.ndim != 1:
                raise ValueError(f"with kernel_width, kernel is the 1-D height kernel; got shape {tuple(k.shape)}")
            k_h, k_w = k, _as_float64(kernel_width, "kernel_width")
        elif k.ndim == 1:
            k_h = k_w = k
        elif k.ndim == 2:
            u, s, vh = torch.linalg.svd(k)
            if s[0] == 0:
                raise ValueError("kernel is all zeros: the blurred image would measure nothing")
            if s.numel() > 1 and s[1] > 1e-9 * s[0]:
                raise ValueError(f"2-D kernel is not separable (second singular value {s[1].item():.3g} vs "
                                 f"{s[0].item():.3g}); give a rank-1 kernel or 1-D kernels")
            sign = -1.0 if u[:, 0].sum() < 0 else 1.0  # k = σ u vᵀ = (sign √σ u)(sign √σ v)ᵀ
            k_h, k_w = sign * s[0].sqrt() * u[:, 0], sign * s[0].sqrt() * vh[0]
        else:
            raise ValueError(f"kernel must be 1-D or 2-D, got shape {tuple(k.shape)}")
        for name, k in (("kernel (height)", k_h), ("kernel (width)", k_w)):
            if k.ndim != 1 or k.numel() == 0:
                raise ValueError(f"{name} must be a non-empty 1-D kernel, got shape {tuple(k.shape)}")
            if not (k != 0).any():
                raise ValueError(f"{name} is all zeros: the blurred image would measure nothing")
        self.kernel_h, self.kernel_w = k_h, k_w

    def measurement_shape(self, shape: Shape) -> Shape:
        return self._spatial(shape)

    def input_shape(self, measurement_shape: Shape) -> Shape:
        return self._spatial(measurement_shape)

    @staticmethod
    def _conv_matrix(k: torch.Tensor, n: int) -> torch.Tensor:
        """A[i, j] = k[i - j + L//2] where 0 <= i - j + L//2 < L: every one of the L taps."""
        L = k.numel()
        A = torch.zeros(n, n, dtype=torch.float64)
        i = torch.arange(n)
        for v in range(L):
            j = i - v + L // 2
            ok = (j >= 0) & (j < n)
            A[i[ok], j[ok]] = k[v]
        return A

    def _axis_matrices(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._conv_matrix(self.kernel_h, h), self._conv_matrix(self.kernel_w, w)

    def __repr__(self) -> str:
        return f"Deblur(kernel {self.kernel_h.numel()}×{self.kernel_w.numel()})"


def residual_ratio(operator: LinearOperator, x: torch.Tensor, y: torch.Tensor, sigma_y: float) -> float:
    """E‖Hx̂ - y‖² / (m σ_y²) over the batch (m = entries of one measurement): 1 for an exact
    posterior sampler on average over y (PAPER.md); well below 1 means the restorations fit the noise."""
    sigma_y = check_sigma_y(sigma_y)
    if sigma_y == 0:
        raise ValueError("the residual ratio needs sigma_y > 0")
    r = operator(x) - y.to(x)
    return float(r.reshape(len(r), -1).pow(2).sum(1).mean() / (r[0].numel() * sigma_y**2))
