"""Measured defaults (no imports, so the command line can show them without loading torch).

Chosen on the exact Gaussian-mixture oracle over linear, scaled-linear and cosine schedules and
epsilon / v / sample prediction: ``benchmarks/gmm_quality.py``, results in BENCHMARKS.md.
"""

#: η of the inner DDIM / DPM-Solver++ sampler: stochastic, so the outer step sees a sample of p(x0 | x_τ).
DEFAULT_INNER_ETA = 0.85
#: η of the outer DDIM step; the reference code's 0 ruins the final on the cosine schedule.
DEFAULT_OUTER_ETA = 1.0
#: plan_steps: inner steps ≈ budget ** DEFAULT_INNER_EXPONENT (the square layout, 100 → 10 × 10).
DEFAULT_INNER_EXPONENT = 0.5
