"""Evaluating restoration (``evaluate --task``): ground truths measured through a task's operator,
restored by each method, scored against what a restoration should be.

A :class:`RestorationTarget` wraps a generation target. Its methods use the sampler ``ddrm``
(:mod:`.methods`): nested DDRM (``nested_restore``), DDRM's x̂0 previews and exact-N DDRM runs
(``ddrm_sample``); a nested method with ``dpmpp-2m`` is the unconditional-inner (PSC) variant.

* On the Gaussian-mixture oracle: one ground truth x0 drawn from the prior and one measurement
  y = Hx0 + σ_y n, restored by every sample; ``gmm`` is the *exact posterior* p(x0 | y), so the
  ``gmm-fd`` metric scores posterior sampling exactly.
* On a pixel-space digit model: the 500 held-out digits (cycled) are the ground truths, each
  measured with its own noise (drawn from the seed and its index, so every method, batch and process
  sees the same y); ``per_measurement`` consecutive samples restore one measurement (8 for the PSNR
  of their mean). Labels are the truths' digits, so ``accuracy`` is "classified as the true digit";
  the networks run unconditionally.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from ..samplers.noise import Generator, randn_like
from .methods import DDRM, Method
from .targets import check_sampler

__all__ = ["RestorationTarget"]


class RestorationTarget:
    def __init__(self, base: Any, task: str, sigma_y: float, *, per_measurement: int = 1, box: str = "bottom",
                 blur_sigma: float = 1.0, seed: int = 0) -> None:
        from ..restoration import make_operator
        from ..restoration.operators import check_sigma_y

        self.base, self.task, self.seed = base, task, seed
        self.sigma_y = check_sigma_y(sigma_y)
        if self.sigma_y == 0:
            raise ValueError("sigma_y must be > 0 for an evaluation (the residual ratio divides by it)")
        if isinstance(per_measurement, bool) or not isinstance(per_measurement, int) or per_measurement < 1:
            raise ValueError(f"per_measurement must be a positive integer, got {per_measurement!r}")
        self.per_measurement = per_measurement
        self.schedule = base.schedule
        self.image_shape, self.prompts = base.image_shape, None
        self.gmm = None
        generator = torch.Generator().manual_seed(seed)
        if getattr(base, "gmm", None) is not None:  # the oracle: one truth, one measurement, its exact posterior
            self.shape = (1, 8, 8)
            self.operator = make_operator(task, self.shape, box=box, blur_sigma=blur_sigma, seed=seed)
            self._truths = base.gmm.sample(1, generator)[0].reshape(1, *self.shape)
            self._labels = None
            self._y = self.operator.measure(self._truths, self.sigma_y, generator)
            self.gmm = base.gmm.posterior(self.operator, self._y[0], self.sigma_y)
            self.num_classes, self.class_names = None, None
        else:
            adapter = base.pipe.adapter
            if not getattr(adapter, "pixel_space", False):
                raise ValueError(f"task {task}: restoration needs a pixel-space model, not a {adapter.family} model "
                                 "(H acts on pixels; the VAE decoder is nonlinear)")
            self.shape = tuple(adapter.latent_shape(1, base.height, base.width)[1:])
            if self.shape != (1, 28, 28):
                raise ValueError(f"task {task}: the ground truths are the held-out MNIST digits (1×28×28); this model "
                                 f"makes {self.shape} images")
            from ..data import load_mnist5k

            images, labels = load_mnist5k("test")
            self._truths = torch.from_numpy(images).double().div(127.5).sub(1).unsqueeze(1)
            self._labels = torch.from_numpy(labels)
            self.operator = make_operator(task, self.shape, box=box, blur_sigma=blur_sigma, seed=seed)
            self.num_classes, self.class_names = base.num_classes, base.class_names
        self.name = f"{base.name}+{task}"

    # -- the ground truths and their measurements ---------------------------------------------------
    def _truth_index(self, rows: range) -> torch.Tensor:
        if self.gmm is not None:
            return torch.zeros(len(rows), dtype=torch.long)
        return torch.tensor([(i // self.per_measurement) % len(self._truths) for i in rows])

    def truth(self, rows: range) -> torch.Tensor:
        """The ground truths of ``rows`` (model space, float64)."""
        return self._truths[self._truth_index(rows)]

    def measurement_ids(self, rows: range) -> list[int]:
        """Which measurement each row restores (rows sharing an id restore the same y)."""
        return [0] * len(rows) if self.gmm is not None else [i // self.per_measurement for i in rows]

    def measurement(self, rows: range) -> torch.Tensor:
        """y = H x0 + σ_y n of ``rows`` (float64); measurement j's noise comes from seed and j alone."""
        if self.gmm is not None:
            return self._y.expand(len(rows), *self._y.shape[1:])
        out = []
        for j in self.measurement_ids(rows):
            x0 = self._truths[j % len(self._truths)][None]
            out.append(self.operator.measure(x0, self.sigma_y, torch.Generator().manual_seed(self.seed * 1_000_003 + j)))
        return torch.cat(out)

    def truth_pixels(self, rows: range) -> torch.Tensor:
        return self.decode(self.truth(rows))

    # -- the target interface --------------------------------------------------------------------------
    def condition(self, rows: range) -> tuple[torch.Tensor | None, None]:
        """The truths' labels (for ``accuracy``: classified as the true digit); no prompts."""
        return (None if self._labels is None else self._labels[self._truth_index(rows)]), None

    def frames(self, method: Method, rows: range, labels, prompts, generator: Generator,
               steps: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """``(nfe, raw)`` per frame of the restorations of ``rows`` (``generator``: one per sample, or one)."""
        check_sampler(method, restoration=True)
        y = self.measurement(rows)
        if self.gmm is not None:
            from ..restoration import ddrm_sample, nested_restore

            base = self.base
            noise = randn_like(torch.empty(len(rows), *self.shape, dtype=torch.float64), generator)
            common = dict(operator=self.operator, measurement=y, sigma_y=self.sigma_y, generator=generator,
                          prediction_type=base.prediction_type)
            if method.kind == "nested":
                session = nested_restore(base.model, base.schedule, noise, outer_steps=method.outer_steps,
                                         inner_steps=list(method.inner_steps), eta=method.eta,
                                         outer_eta=method.outer_eta, inner=self._inner(method), **common)
            else:
                session = ddrm_sample(base.model, base.schedule, noise, steps=steps or method.steps,
                                      eta=method.eta, **common)
            for frame in session:
                yield frame.nfe, frame.image.reshape(len(rows), -1)
            return
        pipe = self.base.pipe
        common = dict(operator=self.operator, sigma_y=self.sigma_y, measurement=y, num_images=len(rows),
                      generator=generator, output_type="latent", eta=method.eta)
        if method.kind == "nested":
            session = pipe.restore(outer_steps=method.outer_steps, inner_steps=list(method.inner_steps),
                                   outer_eta=method.outer_eta, inner=self._inner(method), **common)
        else:
            session = pipe.restore(method="ddrm", steps=steps or method.steps, **common)
        for frame in session:
            yield frame.nfe, frame.latents

    @staticmethod
    def _inner(method: Method) -> str:
        if method.sampler == DDRM:
            return "ddrm"
        if method.sampler != "dpmpp-2m":
            raise ValueError(f"{method.name}: nested restoration runs DDRM inner runs (sampler 'ddrm') or the "
                             "unconditional DPM-Solver++(2M) inner runs of the PSC variant (sampler 'dpmpp-2m')")
        return "unconditional"

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        return self.base.decode(raw.reshape(len(raw), *self.shape) if self.gmm is None else raw)

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "task": self.task, "operator": repr(self.operator), "sigma_y": self.sigma_y,
                "per_measurement": self.per_measurement, "task_seed": self.seed}
