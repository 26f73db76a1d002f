"""An exact test oracle: a Gaussian mixture whose denoiser E[x0 | x_t] has a closed form.

For x_t = α x0 + σ ε and x0 ~ Σ_k π_k N(μ_k, Σ_k), with Σ_k = U_k diag(λ_k) U_kᵀ:

    x_t | k ~ N(α μ_k, U_k diag(α²λ_k + σ²) U_kᵀ)
    E[x0 | x_t, k] = μ_k + U_k diag(α λ_k / (α²λ_k + σ²)) U_kᵀ (x_t - α μ_k)
    E[x0 | x_t] = Σ_k p(k | x_t) E[x0 | x_t, k]

on any schedule (VP: α = √ᾱ, σ = √(1-ᾱ); flow: α = 1-σ; at α = 0 the posterior mean is the
mixture's mean), so sampler quality can be measured exactly (Fréchet distance to the true mixture)
without training. :meth:`GaussianMixture.model` turns it into a "network" for any schedule and
prediction type (the exact velocity on a flow schedule), with class conditioning (component k =
class k; the index ``num_components`` is the null class) and classifier-free guidance.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..metrics import frechet_distance, gaussian_stats
from ..schedules import Level, Schedule, _as_level, as_schedule, from_denoised

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """A d-dimensional Gaussian mixture with exact posterior means (float64 throughout)."""

    def __init__(self, means: torch.Tensor, covariances: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        covariances = torch.as_tensor(covariances, dtype=torch.float64)
        if means.ndim != 2 or covariances.shape != (*means.shape, means.shape[1]):
            raise ValueError(f"means must be [K, d] and covariances [K, d, d], got {tuple(means.shape)} "
                             f"and {tuple(covariances.shape)}")
        K = means.shape[0]
        weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or (weights <= 0).any():
            raise ValueError("weights must be K positive numbers")
        self.weights = weights / weights.sum()
        self.means = means
        self.covariances = (covariances + covariances.transpose(1, 2)) / 2
        self.eigvals, self.eigvecs = torch.linalg.eigh(self.covariances)
        if (self.eigvals <= 0).any():
            raise ValueError("covariances must be positive definite")
        self.chol = torch.linalg.cholesky(self.covariances)

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @classmethod
    def from_digits(cls, regularization: float = 0.01) -> "GaussianMixture":
        """One full-covariance Gaussian per class, fitted to scikit-learn's 8×8 digits in [-1, 1]
        (1,797 images, d = 64), with ``regularization``·I added to each covariance."""
        from sklearn.datasets import load_digits

        data = load_digits()
        x = torch.as_tensor(data.data, dtype=torch.float64) / 8.0 - 1.0
        y = torch.as_tensor(data.target)
        means, covs, weights = [], [], []
        for c in range(10):
            xc = x[y == c]
            means.append(xc.mean(0))
            covs.append(torch.cov(xc.T) + regularization * torch.eye(x.shape[1], dtype=torch.float64))
            weights.append(len(xc))
        return cls(torch.stack(means), torch.stack(covs), torch.tensor(weights, dtype=torch.float64))

    # -- exact statistics -------------------------------------------------------------------
    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> torch.Tensor:
        m = self.mean()
        second = (self.weights[:, None, None] * (self.covariances + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - m[:, None] * m[None, :]

    def sample(self, n: int, generator: torch.Generator | None = None,
               classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` exact samples ``[n, d]`` (float64) and their components."""
        if classes is None:
            classes = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[classes] + torch.einsum("nij,nj->ni", self.chol[classes], z), classes

    def components(self, samples: torch.Tensor) -> torch.Tensor:
        """The most likely component of each sample (flattened to [N, d]): argmax_k log w_k + log N(x; μ_k, Σ_k),
        the denoiser's p(k | x_t) at the clean level (α = 1, σ = 0)."""
        x = torch.as_tensor(samples, dtype=torch.float64).reshape(len(samples), -1)
        return self._component_log_p(x, 1.0, 0.0)[2].argmax(1)

    def frechet_distance(self, samples: torch.Tensor, classes: torch.Tensor | int | None = None) -> float:
        """Fréchet distance between ``samples`` (flattened to [N, d]) and the true mixture (or,
        with ``classes`` an int, its component)."""
        mu, cov = gaussian_stats(samples.reshape(len(samples), -1))
        if isinstance(classes, int):
            return frechet_distance(mu, cov, self.means[classes].numpy(), self.covariances[classes].numpy())
        return frechet_distance(mu, cov, self.mean().numpy(), self.covariance().numpy())

    def posterior(self, operator: Any, y: torch.Tensor, sigma_y: float) -> "GaussianMixture":
        """The exact posterior p(x0 | y) for y = H x0 + σ_y n, n ~ N(0, I), as a Gaussian mixture.

        ``operator`` is a :mod:`nested_diffusion.restoration` operator (made dense here: d is small),
        ``y`` one measurement in its measurement shape, σ_y > 0. Per component (Bishop 2006, §2.3.3):
        S = HΣHᵀ + σ_y²I, G = ΣHᵀS⁻¹, mean μ + G(y - Hμ), covariance Σ - GHΣ, weight ∝ π N(y; Hμ, S).
        Samples and means are flat ``[N, d]``.
        """
        from ..restoration.operators import check_sigma_y

        sigma_y = check_sigma_y(sigma_y)
        if sigma_y == 0:
            raise ValueError("the exact posterior needs sigma_y > 0 (with σ_y = 0 it is degenerate)")
        y = torch.as_tensor(y, dtype=torch.float64).cpu()
        shape = operator.input_shape(tuple(y.shape))
        if math.prod(shape) != self.dim:
            raise ValueError(f"{operator!r} on measurements of shape {tuple(y.shape)} acts on items of shape {shape}, "
                             f"but the mixture has d = {self.dim}")
        H = operator.matrix(shape)  # (m, d)
        y = y.reshape(-1)
        if y.numel() != H.shape[0]:
            raise ValueError(f"y has {y.numel()} entries, the operator measures {H.shape[0]}")
        HS = H @ self.covariances  # [K, m, d]: H Σ_k
        S = HS @ H.T + sigma_y**2 * torch.eye(H.shape[0], dtype=torch.float64)
        L = torch.linalg.cholesky(S)
        r = y - self.means @ H.T  # [K, m]: y - H μ_k
        G_t = torch.cholesky_solve(HS, L)  # [K, m, d] = S⁻¹ H Σ = Gᵀ
        means = self.means + torch.einsum("km,kmd->kd", r, G_t)
        covariances = self.covariances - HS.transpose(1, 2) @ G_t  # Σ - Σ Hᵀ S⁻¹ H Σ
        white = torch.linalg.solve_triangular(L, r[..., None], upper=False).squeeze(-1)
        log_w = torch.log(self.weights) - torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1) - 0.5 * (white**2).sum(1)
        return GaussianMixture(means, covariances, torch.softmax(log_w, 0))

    # -- the exact denoiser -------------------------------------------------------------------
    def denoise(self, x_t: torch.Tensor, level: Level | torch.Tensor | float,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """E[x0 | x_t] (or E[x0 | x_t, k] where ``class_labels`` names a component; the label
        ``num_components`` means unconditional) at ``level`` — a :class:`~nested_diffusion.schedules.Level`
        (α, σ), or a VP ᾱ for the level (√ᾱ, √(1-ᾱ)); floats or one value per item. ``x_t`` is ``[N, ...]``
        with d elements per item."""
        shape, dtype = x_t.shape, x_t.dtype
        x = x_t.reshape(shape[0], -1).to(torch.float64)
        if x.shape[1] != self.dim:
            raise ValueError(f"x_t has {x.shape[1]} elements per item, the mixture has d = {self.dim}")
        labels = None
        if class_labels is not None:
            labels = torch.as_tensor(class_labels, device=x.device).reshape(-1).expand(x.shape[0])
            if ((labels < 0) | (labels > self.num_components)).any():
                raise ValueError(f"class_labels must lie in [0, {self.num_components}] ({self.num_components} = unconditional)")
        alpha, sigma = (torch.as_tensor(v, dtype=torch.float64).reshape(-1).cpu().expand(x.shape[0])
                        for v in _as_level(level if isinstance(level, Level) else
                                           torch.as_tensor(level, dtype=torch.float64)))
        out = torch.empty_like(x)
        pairs = torch.stack([alpha, sigma], 1)
        for a, s in torch.unique(pairs, dim=0).tolist():  # samplers call with one level per batch: one group
            rows = ((alpha == a) & (sigma == s)).nonzero().squeeze(1).to(x.device)
            out[rows] = self._denoise_at(x[rows], a, s, None if labels is None else labels[rows])
        return out.reshape(shape).to(dtype)

    def _component_log_p(self, x: torch.Tensor, a: float, s: float) -> tuple[torch.Tensor, ...]:
        """x_t - α μ_k in each component's eigenbasis [N, K, d], the variances of x_t | k there [K, d], and
        log w_k + log N(x_t; α μ_k, α² Σ_k + σ² I) up to a constant [N, K]."""
        U, _, mU, _, lam = self._basis(x.device)
        K, d = self.num_components, self.dim
        var = a * a * lam + s * s  # [K, d]: variances of x_t | k in the eigenbasis
        z = (x @ U).view(len(x), K, d)  # x in each component's eigenbasis, [N, K, d]
        z -= a * mU  # minus α μ_k (projected)
        blocks = torch.block_diag(*(1 / var)[:, :, None])  # [K·d, K]: 1/var_k in column k
        quad = (z * z).view(len(x), K * d) @ blocks  # Σ_e z²/var per component, [N, K]
        log_p = (torch.log(self.weights.to(x.device)) - 0.5 * torch.log(var).sum(-1))[None] - 0.5 * quad
        return z, var, log_p

    def _denoise_at(self, x: torch.Tensor, a: float, s: float, labels: torch.Tensor | None) -> torch.Tensor:
        _, UT, _, means, lam = self._basis(x.device)
        K, d = self.num_components, self.dim
        z, var, log_p = self._component_log_p(x, a, s)
        if labels is not None:
            mask = torch.nn.functional.one_hot(labels, self.num_components + 1)[:, : self.num_components].bool()
            log_p = torch.where(mask.any(1, keepdim=True), log_p.masked_fill(~mask, -math.inf), log_p)
        r = torch.softmax(log_p, dim=1)  # p(k | x_t)
        z *= a * lam / var  # the posterior gain per eigen-direction
        z *= r[..., None]
        return r @ means + z.view(len(x), K * d) @ UT

    def _basis(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(U as [d, K·d], Uᵀ stacked as [K·d, d], the means in each eigenbasis [K, d], the means, the
        eigenvalues) on ``device``, made once per device."""
        cache = self.__dict__.setdefault("_basis_cache", {})
        if device not in cache:
            K, d = self.num_components, self.dim
            U = self.eigvecs.to(device)
            cache[device] = (U.permute(1, 0, 2).reshape(d, K * d).contiguous(),
                             U.transpose(1, 2).reshape(K * d, d).contiguous(),
                             torch.einsum("kd,kde->ke", self.means.to(device), U), self.means.to(device),
                             self.eigvals.to(device))
        return cache[device]

    def model(self, schedule: Schedule | Any, prediction_type: str | None = None) -> Callable[..., torch.Tensor]:
        """A network-like ``model(x_t, t, class_labels=None, guidance_scale=1.0)`` on ``schedule`` (a
        :class:`~nested_diffusion.schedules.Schedule` or a 1-D ᾱ table) whose output is the exact
        ``prediction_type`` target (default: the schedule's — ε on VP, the velocity ε - x0 on flow) at
        the level of the model time ``t``. Guidance mixes conditional and unconditional predictions:
        out = out_u + w (out_c - out_u)."""
        schedule = as_schedule(schedule)
        prediction_type = schedule.check_prediction_type(
            schedule.default_prediction_type if prediction_type is None else prediction_type)

        def model(x_t: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None,
                  guidance_scale: float = 1.0) -> torch.Tensor:
            alpha, sigma = (v.to(x_t.device) for v in schedule.levels(t))
            shape = (-1,) + (1,) * (x_t.ndim - 1)
            level = Level(alpha, sigma)
            denoised = self.denoise(x_t, level, class_labels)
            if class_labels is not None and guidance_scale != 1.0:
                uncond = self.denoise(x_t, level, None)
                denoised = uncond + guidance_scale * (denoised - uncond)
            return from_denoised(denoised, x_t, Level(alpha.reshape(shape).to(x_t.dtype),
                                                      sigma.reshape(shape).to(x_t.dtype)), prediction_type)

        return model
