"""Anytime restoration of linear inverse problems y = Hx + σ_y n (issue 11).

Operators with an implicit SVD, the DDRM sampler (Kawar et al. 2022) as a session
(:func:`ddrm_sample`, frames = x̂0 previews) and nested DDRM (:func:`nested_restore`, frames =
measurement-consistent restorations after every outer step).
"""

from .ddrm import DDRM, DDRMSession, InverseProblem, Restoring, ddrm_sample, ddrm_start, ddrm_step, ddrm_update
from .nested import NestedRestoreSession, nested_restore
from .operators import (Colorization, Deblur, Dense, Denoising, Inpainting, LinearOperator, SuperResolution,
                        residual_ratio)
from .tasks import DEFAULT_SIGMA_Y, TASKS, make_operator

__all__ = ["LinearOperator", "Inpainting", "SuperResolution", "Deblur", "Colorization", "Denoising", "Dense",
           "residual_ratio", "InverseProblem", "DDRM", "Restoring", "ddrm_start", "ddrm_step", "ddrm_update", "DDRMSession", "ddrm_sample",
           "NestedRestoreSession", "nested_restore", "TASKS", "DEFAULT_SIGMA_Y", "make_operator"]
