"""Measured defaults (no imports, so the command line can show them without loading torch).

Chosen on the exact Gaussian-mixture oracle over linear, scaled-linear and cosine schedules and
epsilon / v / sample prediction: ``benchmarks/gmm_quality.py`` and ``benchmarks/anytime_search.py``,
results in BENCHMARKS.md.
"""

#: η of the inner DDIM / DPM-Solver++ sampler: stochastic, so the outer step sees a sample of p(x0 | x_τ).
DEFAULT_INNER_ETA = 0.85
#: η of the outer DDIM step; the reference code's 0 ruins the final on the cosine schedule.
DEFAULT_OUTER_ETA = 1.0
#: plan_steps: inner steps ≈ budget ** DEFAULT_INNER_EXPONENT (the square layout, 100 → 10 × 10).
DEFAULT_INNER_EXPONENT = 0.5
#: The project default layout (plan_layout, BENCHMARKS.md §6): a DPM-Solver++(2M) inner sampler …
DEFAULT_INNER_SAMPLER = "dpmpp-2m"
#: … with inner runs that grow so frames land at these fractions of the NFE budget
#: (plan_schedule(100) = 10, 10, 10, 20, 25, 25 inner steps: frames at 10, 20, 30, 50, 75, 100 NFEs) …
DEFAULT_FRAME_FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
#: … the first inner run from T-1, the later ones from these noise levels σ = √((1-ᾱ)/ᾱ) (mapped to
#: each model's own timesteps, kept strictly decreasing) …
DEFAULT_OUTER_SIGMAS = (1.4, 0.42, 0.42, 0.4, 0.14)
#: … the first inner run deterministic (η = 0: the best *marginal* sample, all that a renoising outer
#: step needs), the later ones stochastic (η = DEFAULT_INNER_ETA) …
DEFAULT_FIRST_INNER_ETA = 0.0
#: … and an outer step that re-noises the frame to the next outer timestep (Restart-style) rather
#: than the paper's DDIM posterior step.
DEFAULT_OUTER_UPDATE = "renoise"
#: NFE budget when none is given.
DEFAULT_BUDGET = 100
