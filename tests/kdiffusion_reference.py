"""k-diffusion's DPM-Solver++(2M) SDE and (3M) SDE samplers, ported verbatim as test references.

Ported from crowsonkb/k-diffusion (MIT licence), ``k_diffusion/sampling.py`` at commit 4601bf0:
``sample_dpmpp_2m_sde`` and ``sample_dpmpp_3m_sde``, line for line, with only what a test needs changed:
no progress bar, plain Python floats for the sigmas (so ``.log()`` is ``math.log``), and the noise sampler
passed in (k-diffusion's default is a Brownian tree; any ``noise_sampler(sigma, sigma_next)`` is allowed).
They run in k-diffusion's variables: x in the variance-exploding form x/α, sigmas σ/α, ``model(x, sigma)``
the denoiser x̂0. :func:`run_on_levels` maps a grid of (α, σ) levels to them and back.
"""

from __future__ import annotations

import math

import torch


def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, eta=1., s_noise=1., noise_sampler=None,
                        solver_type='midpoint'):
    """DPM-Solver++(2M) SDE."""

    if solver_type not in {'heun', 'midpoint'}:
        raise ValueError('solver_type must be \'heun\' or \'midpoint\'')

    extra_args = {} if extra_args is None else extra_args

    old_denoised = None
    h_last = None

    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i], **extra_args)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        if sigmas[i + 1] == 0:
            # Denoising step
            x = denoised
        else:
            # DPM-Solver++(2M) SDE
            t, s = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = s - t
            eta_h = eta * h

            x = sigmas[i + 1] / sigmas[i] * math.exp(-eta_h) * x + -math.expm1(-h - eta_h) * denoised

            if old_denoised is not None:
                r = h_last / h
                if solver_type == 'heun':
                    x = x + (-math.expm1(-h - eta_h) / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                elif solver_type == 'midpoint':
                    x = x + 0.5 * -math.expm1(-h - eta_h) * (1 / r) * (denoised - old_denoised)

            if eta:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise

        old_denoised = denoised
        h_last = h
    return x


def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, eta=1., s_noise=1., noise_sampler=None):
    """DPM-Solver++(3M) SDE."""

    extra_args = {} if extra_args is None else extra_args

    denoised_1, denoised_2 = None, None
    h_1, h_2 = None, None

    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i], **extra_args)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        if sigmas[i + 1] == 0:
            # Denoising step
            x = denoised
        else:
            t, s = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = s - t
            h_eta = h * (eta + 1)

            x = math.exp(-h_eta) * x + -math.expm1(-h_eta) * denoised

            if h_2 is not None:
                r0 = h_1 / h
                r1 = h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                r = h_1 / h
                d = (denoised - denoised_1) / r
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                x = x + phi_2 * d

            if eta:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise

        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def run_on_levels(sampler_fn, denoise, x, timesteps, schedule, generator, **kwargs):
    """Run a k-diffusion sampler on a grid of ``schedule`` (finite noise levels: α > 0 at every point) with the
    project's denoiser ``denoise(x_t, t)``; the noise is drawn from ``generator`` in the order the project's
    samplers draw it. Returns the final sample and the list of x̂0 per step."""
    levels = [schedule.level(t) for t in timesteps]
    sigmas = [s / a for a, s in levels] + [0.0]
    by_sigma = {sig: (t, a) for sig, t, (a, _) in zip(sigmas, timesteps, levels)}
    denoised = []

    def model(x_ve, sigma):
        t, alpha = by_sigma[sigma]
        return denoise(x_ve * alpha, t)

    def noise_sampler(sigma, sigma_next):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype)

    out = sampler_fn(model, x / levels[0].alpha, sigmas, noise_sampler=noise_sampler,
                     callback=lambda d: denoised.append(d['denoised']), **kwargs)
    return out, denoised
