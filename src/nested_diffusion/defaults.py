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
#: The inner sampler of layouts a user gives (outer/inner counts, outer times): DPM-Solver++(2M) with
#: η = DEFAULT_INNER_ETA (BENCHMARKS.md §8) …
DEFAULT_INNER_SAMPLER = "dpmpp-2m"
#: … while the planned default (plan_layout, BENCHMARKS.md §12) runs UniPC (bh2, deterministic: the
#: renoising outer step needs only marginal samples) in every inner run …
PLAN_INNER_SAMPLER = "unipc"
#: … with frames on this ladder of fractions of the NFE budget (plan_schedule(100) = 10, 10, 10, 20, 25, 25
#: inner steps: frames at 10, 20, 30, 50, 75, 100 NFEs) …
DEFAULT_FRAME_FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
#: … of which the plan keeps the first and every later one whose inner run has at least this many NFEs
#: (shorter runs merge into the next: 20 NFEs → frames at 2, 10, 20; 50 → 5, 15, 25, 38, 50; 100 → all six),
#: from PLAN_MIN_RUN_BUDGET NFEs on (measured from 20; smaller budgets keep the whole ladder) …
PLAN_MIN_RUN = 8
PLAN_MIN_RUN_BUDGET = 20
#: … the first inner run from the top of the schedule, on a grid uniform in log-SNR where the top's noise
#: level σ/α is at most this (linear 157, scaled-linear 14.6; not cosine's 2·10⁴, where such a grid wastes its
#: steps at the top) and the run has at least 3 steps, otherwise the schedule's own (trailing) grid …
PLAN_LOGSNR_MAX_NOISE = 1000.0
#: … each later one from the previous frame re-noised to a noise level σ/α (√((1-ᾱ)/ᾱ) on VP, σ/(1-σ) on
#: flow) that falls with n, the NFEs spent before it: σ = a · n^(-p), clipped to [lo, hi]
#: (planner.restart_noise_level), mapped to the model's own times …
PLAN_RESTART_LEVEL = (10.0, 0.75, 0.14, 4.5)
#: … except the first restart after a short first run, which redoes the coarse scales that run got wrong
#: (its error falls about as n^-3): at least a · n^(-p) clipped to [lo, hi] of this — 8 after 2-4 NFEs, 7 after
#: 5 (budgets 20-50), 3.6 after 7, nothing from 10 on (budget 100 keeps 10·n^-0.75 = 1.78: 5.7 measured worse) …
PLAN_FIRST_RESTART_LEVEL = (175.0, 2.0, 0.14, 8.0)
#: … on a grid uniform in log-SNR where the restart's level is at least this (from σ/α = 4.5, 8 UniPC steps
#: from exact samples score the floor on it, 3.5× the floor on a Karras grid), otherwise a Karras (ρ = 7) grid
#: (as good or a little better from low levels, and better in the chain of restarts), on VP and flow alike …
PLAN_LOGSNR_MIN_RESTART = 2.5
#: … those Karras and log-SNR grids ending at σ/α = this (Stable Diffusion's t = 0 level; flow schedules' grids
#: end there by default too), not at a VP table's t = 0 (linear 0.010, cosine 0.0064), where a short run spends
#: its last steps on what is left: linear budget 50, 3-set means 0.0175-0.0194 → 0.0161-0.0178
#: (BENCHMARKS.md §12 (6)) …
PLAN_GRID_END = 0.03
#: … and an outer step that re-noises the frame to the next outer timestep (Restart-style) rather
#: than the paper's DDIM posterior step.
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
