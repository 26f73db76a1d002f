"""Measured defaults (no imports, so the command line can show them without loading torch).

Chosen on the exact Gaussian-mixture oracle over linear, scaled-linear and cosine schedules and
epsilon / v / sample prediction: ``benchmarks/gmm_quality.py`` and ``benchmarks/envelope_search.py``,
results in BENCHMARKS.md.
"""

#: η of the inner DDIM / DPM-Solver++ sampler: stochastic, so the outer step sees a sample of p(x0 | x_τ).
DEFAULT_INNER_ETA = 0.85
#: η of the outer DDIM step; the reference code's 0 ruins the final on the cosine schedule.
DEFAULT_OUTER_ETA = 1.0
#: outer or inner step count when a layout gives only the other one, or neither and no budget plan applies
#: (the paper's 10 × 10)
DEFAULT_STEPS = 10
#: The project default layout (plan_layout, BENCHMARKS.md §8): a DPM-Solver++(2M) inner sampler …
DEFAULT_INNER_SAMPLER = "dpmpp-2m"
#: … with inner runs that grow so frames land at these fractions of the NFE budget
#: (plan_schedule(100) = 10, 10, 10, 20, 25, 25 inner steps: frames at 10, 20, 30, 50, 75, 100 NFEs) …
DEFAULT_FRAME_FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
#: … the first inner run from the top of the schedule, the later ones from the previous frame re-noised to
#: these noise levels σ/α (√((1-ᾱ)/ᾱ) on VP, σ/(1-σ) on flow; mapped to each model's own times, kept
#: strictly decreasing), by reference
#: budget: a budget uses the entry of the largest reference budget not above it (the smallest entry
#: below 20). Short inner runs need higher restarts: measured at 20, 50 and 100 NFEs (BENCHMARKS.md §8) …
DEFAULT_OUTER_SIGMAS = {
    20: (2.8, 0.84, 0.84, 0.8, 0.28),
    50: (1.4, 0.42, 0.42, 0.4, 0.14),
    100: (0.7, 0.42, 0.42, 0.4, 0.14),
}
#: … and an outer step that re-noises the frame to the next outer timestep (Restart-style) rather
#: than the paper's DDIM posterior step; every inner run DPM-Solver++(2M) with η = DEFAULT_INNER_ETA.
DEFAULT_OUTER_UPDATE = "renoise"
#: the outer steps there are: the paper's DDIM step (with an outer η) and the renoising one
OUTER_UPDATES = ("ddim", "renoise")
#: NFE budget when none is given.
DEFAULT_BUDGET = 100

# -- restoration (issue 11): measured in BENCHMARKS.md §6, `benchmarks/restore_oracle.py` --------
#: DDRM's η and η_b (Kawar et al. 2022): ddrm_sample's defaults (η_b is nested_restore's too).
DEFAULT_DDRM_ETA = 0.85
DEFAULT_DDRM_ETA_B = 1.0
#: Timestep grid of ddrm_sample: spaced_timesteps(T-1, steps, power) (1: evenly spaced, as the core and DDRM).
DEFAULT_DDRM_GRID_POWER = 1.0
#: nested_restore's inner DDRM runs: η and the grid spaced_timesteps(τ, M, power). Few-step DDRM ends on
#: the x̂0 of its last timestep; the quadratic grid (power 2) puts that timestep near 0, and η 0.95
#: (more fresh noise than DDRM's 0.85) suits the short runs (BENCHMARKS.md §6: η 0.85 → 1, power 1 → 3).
DEFAULT_RESTORE_INNER_ETA = 0.95
DEFAULT_RESTORE_INNER_GRID_POWER = 2.0
#: η of nested_restore's outer DDRM step (0.5 and 1 tie early; 0.5 has the better finals).
DEFAULT_RESTORE_OUTER_ETA = 0.5
#: Restoration tasks (restoration/tasks.py builds their operators) and what they do, for --help.
RESTORATION_TASKS = {
    "inpaint-box": "fill a missing box (--box: a half or the centre) of the image",
    "inpaint-random": "fill a random half of the pixels (the mask drawn from --seed)",
    "inpaint-mask": "fill the pixels a mask image marks (--mask PNG: black = missing, white = kept)",
    "sr2": "2× super-resolution (average pooling)",
    "sr4": "4× super-resolution (average pooling)",
    "deblur": "Gaussian deblurring (separable kernel, --blur-sigma pixels)",
    "denoise": "denoising (H = I; the noise is σ_y)",
    "colorize": "colorization (RGB models: y = the gray image)",
    "dense": "a dense random 20×n matrix (small items only: the Gaussian-mixture oracle)",
}
#: inpaint-box: which box is hidden
RESTORATION_BOXES = ("top", "bottom", "left", "right", "center")
#: σ_y of the measurement noise on the model's [-1, 1] scale when none is given
DEFAULT_SIGMA_Y = 0.05
