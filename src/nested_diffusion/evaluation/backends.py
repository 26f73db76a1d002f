"""Metric backends: per-sample features computed where the samples are made (any process),
scores computed once on the main process from the gathered features.

======== =========================================================== ================
name     what                                                        better
======== =========================================================== ================
fid      Fréchet distance, InceptionV3 pool3 (Heusel et al. 2017)     lower
digit-fd Fréchet distance, the shipped digit classifier's 128-d      lower
         features, to the held-out MNIST-5k test digits
accuracy fraction the digit classifier labels as the requested class higher
clip     CLIP score, 100·max(cos(image, prompt), 0) (Hessel et al.)   higher
gmm-fd   exact Fréchet distance to the Gaussian-mixture oracle (with  lower
         a task: to the exact posterior)
residual restoration: E‖Hx̂ − y‖² / (m σ_y²), 1 for exact posterior  → 1
         sampling (reported as is; below 1 fits the noise)
psnr     restoration: mean PSNR (dB) of each sample vs its truth      higher
psnr-mean restoration: PSNR of the mean of the samples of one         higher
         measurement (``--per-measurement``; rewards blur)
======== =========================================================== ================

Reference statistics of real data (FID, digit-FD) are computed once and cached as ``.npz``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..metrics import frechet_distance, gaussian_stats
from ._files import replacing

__all__ = ["MetricBackend", "METRICS", "make_metric", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$NESTED_DIFFUSION_CACHE`` or ``~/.cache/nested-diffusion``: reference statistics."""
    return Path(os.environ.get("NESTED_DIFFUSION_CACHE", Path.home() / ".cache" / "nested-diffusion"))


class MetricBackend:
    """``setup`` (check the target, load networks, reference statistics), ``features`` (per
    sample, ``[B, D]`` float32 numpy) and ``score`` (one number from all samples' features)."""

    name: str
    lower_is_better: bool = True
    #: the value of a perfect method when it is neither "lower" nor "higher" (the residual ratio: 1)
    ideal: float | None = None

    def setup(self, target: Any, device: torch.device, cache_dir: Path) -> None:  # pragma: no cover - interface
        pass

    def features(self, pixels: torch.Tensor, raw: torch.Tensor, labels: torch.Tensor | None,
                 prompts: Sequence[str] | None, rows: range | None = None) -> np.ndarray:  # pragma: no cover
        """Per-sample features of the samples ``rows`` (``pixels`` in [0, 1], ``raw`` in model space,
        ``None`` when recomputed from kept 8-bit images)."""
        raise NotImplementedError

    def score(self, features: np.ndarray) -> float:
        return float(np.mean(features))

    def floor(self, num_samples: int) -> tuple[float, float] | None:
        """Mean and standard deviation of the metric over independent sets of ``num_samples`` ideal samples
        (the noise floor of a verdict at that sample count), where the backend can draw ideal samples;
        ``None`` otherwise."""
        return None


class _Frechet(MetricBackend):
    reference: tuple[np.ndarray, np.ndarray]

    def score(self, features: np.ndarray) -> float:
        return frechet_distance(*gaussian_stats(features), *self.reference)


def _cached_stats(path: Path, compute) -> tuple[np.ndarray, np.ndarray]:
    """Reference (μ, Σ) from ``path`` or computed by ``compute()`` and written there atomically."""
    if path.is_file():
        with np.load(path) as f:
            return f["mu"], f["sigma"]
    mu, sigma = gaussian_stats(compute())
    with replacing(path, ".npz") as tmp:
        np.savez(tmp, mu=mu, sigma=sigma)
    return mu, sigma


def _require_digits(target: Any, metric: str) -> None:
    if getattr(target, "image_shape", None) != (1, 28, 28):
        raise ValueError(f"metric {metric} needs a 28×28 grayscale digit model (like the embedded one); "
                         f"this model makes {getattr(target, 'image_shape', 'non-image')} samples")


class FID(_Frechet):
    """FID against ``reference``: a folder of images, an ``.npz`` with ``mu``/``sigma``, or — for
    28×28 digit models, by default — the 500 held-out MNIST-5k test digits (few for a 2048-d
    covariance: compare FIDs at equal sample counts only)."""

    name = "fid"

    def __init__(self, reference: str | os.PathLike | None = None, inception: str | os.PathLike | None = None,
                 batch_size: int = 64) -> None:
        self.reference_source, self.inception_path, self.batch_size = reference, inception, batch_size

    def setup(self, target, device, cache_dir) -> None:
        from .inception import inception_features, load_inception

        if getattr(target, "image_shape", None) is None:
            raise ValueError("metric fid needs an image model; use gmm-fd for the Gaussian-mixture oracle")
        self.model = load_inception(device, self.inception_path)
        self._features = lambda pixels: inception_features(self.model, pixels, self.batch_size)
        source = self.reference_source
        if source is None:
            if getattr(target, "image_shape", None) != (1, 28, 28):
                raise ValueError("metric fid needs fid_reference (a folder of real images or an .npz with "
                                 "mu and sigma) for models other than 28×28 digit models")
            from ..data import load_mnist5k

            def real() -> torch.Tensor:  # the held-out split: the same reference as digit-FD
                x, _ = load_mnist5k("test")
                return self._features(torch.from_numpy(x).float().div(255).unsqueeze(1))
            self.reference = _cached_stats(cache_dir / "fid-mnist5k-test-inception.npz", real)
            return
        path = Path(source)
        if path.suffix == ".npz" and path.is_file():
            with np.load(path) as f:
                if "mu" not in f or "sigma" not in f:
                    raise ValueError(f"fid_reference {str(path)!r} must hold arrays 'mu' and 'sigma'")
                self.reference = f["mu"], f["sigma"]
            return
        if not path.is_dir():
            raise ValueError(f"fid_reference {str(path)!r} must be a folder of images or an .npz file")
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
        if len(files) < 2:
            raise ValueError(f"fid_reference {str(path)!r} holds {len(files)} images; need at least 2")
        key = hashlib.sha1("\n".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files).encode())
        self.reference = _cached_stats(cache_dir / f"fid-{key.hexdigest()[:16]}.npz",
                                       lambda: self._folder_features(files))

    def _folder_features(self, files: list[Path]) -> torch.Tensor:
        """Features of image files at their own size (resized to 299² by the same NVIDIA bilinear
        resampling as generated images), batched by size."""
        from PIL import Image

        by_size: dict[tuple[int, int], list[torch.Tensor]] = {}
        for p in files:
            with Image.open(p) as im:
                array = np.array(im.convert("RGB"))
            by_size.setdefault(array.shape[:2], []).append(torch.from_numpy(array).permute(2, 0, 1))
        return torch.cat([self._features(torch.stack(group).float().div(255)) for group in by_size.values()])

    def features(self, pixels, raw, labels, prompts, rows=None) -> np.ndarray:
        return self._features(pixels).numpy()


class DigitFD(_Frechet):
    """Fréchet distance in the digit classifier's feature space to the 500 held-out test digits
    (never seen by the classifier or the embedded model)."""

    name = "digit-fd"

    def setup(self, target, device, cache_dir) -> None:
        from ..data import load_mnist5k
        from ..models import load_classifier

        _require_digits(target, self.name)
        self.classifier = load_classifier().to(device)
        self.device = device
        x, _ = load_mnist5k("test")
        self.reference = gaussian_stats(self._features(torch.from_numpy(x).float().div(255).unsqueeze(1)))

    @torch.inference_mode()
    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(pixels.to(self.device).float() * 2 - 1).float().cpu()

    def features(self, pixels, raw, labels, prompts, rows=None) -> np.ndarray:
        return self._features(pixels).numpy()


class Accuracy(MetricBackend):
    """Fraction of samples the digit classifier assigns to the requested class."""

    name = "accuracy"
    lower_is_better = False

    def setup(self, target, device, cache_dir) -> None:
        from ..models import load_classifier

        _require_digits(target, self.name)
        if getattr(target, "num_classes", None) != 10:
            raise ValueError("metric accuracy needs a class-conditional model with 10 classes")
        self.classifier = load_classifier().to(device)
        self.device = device

    @torch.inference_mode()
    def features(self, pixels, raw, labels, prompts, rows=None) -> np.ndarray:
        predicted = self.classifier(pixels.to(self.device).float() * 2 - 1).argmax(1).cpu()
        return (predicted == labels.cpu()).float().numpy()[:, None]


class CLIPScore(MetricBackend):
    """CLIP score (Hessel et al. 2021): 100 · max(cos(image embedding, text embedding), 0), mean
    over samples, with a local CLIP model folder (transformers ``CLIPModel``). Prompts are the
    evaluation's prompts, or ``"a photo of the digit {name}"``-style class prompts."""

    name = "clip"
    lower_is_better = False

    def __init__(self, model_path: str | os.PathLike | None = None) -> None:
        self.model_path = model_path

    def setup(self, target, device, cache_dir) -> None:
        if self.model_path is None:
            raise ValueError("metric clip needs clip_model (a local transformers CLIP model folder)")
        if not Path(self.model_path).is_dir():
            raise ValueError(f"clip_model {str(self.model_path)!r} is not a folder")
        if getattr(target, "image_shape", None) is None:
            raise ValueError("metric clip needs an image model")
        from transformers import CLIPModel, CLIPTokenizer

        try:
            self.model = CLIPModel.from_pretrained(self.model_path).eval().to(device)
            self.tokenizer = CLIPTokenizer.from_pretrained(self.model_path)
        except Exception as e:  # transformers raises OSError/ValueError/… for broken folders
            raise ValueError(f"clip_model {str(self.model_path)!r}: cannot load a CLIP model: {e}") from e
        cfg = self.model.config.vision_config
        self.size = cfg.image_size
        # OpenAI CLIP normalisation (what CLIPImageProcessor applies)
        self.mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device=device).view(1, 3, 1, 1)
        self.device = device

    @torch.inference_mode()
    def features(self, pixels, raw, labels, prompts, rows=None) -> np.ndarray:
        if prompts is None:
            raise ValueError("metric clip needs prompts: a text-to-image model with prompts, or a "
                             "class-conditional model with class names")
        x = pixels.to(self.device).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
        x = (x.clamp(0, 1) - self.mean) / self.std
        length = min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=length,
                                return_tensors="pt").to(self.device)
        image = self.model.get_image_features(pixel_values=x)
        text = self.model.get_text_features(**tokens)
        image = getattr(image, "pooler_output", image)
        text = getattr(text, "pooler_output", text)
        cos = torch.nn.functional.cosine_similarity(image.float(), text.float(), dim=-1)
        return (100 * cos.clamp(min=0)).cpu().numpy()[:, None]


class GMMFD(MetricBackend):
    """Exact Fréchet distance between the samples and the Gaussian-mixture oracle's distribution."""

    name = "gmm-fd"
    needs_raw = True

    def setup(self, target, device, cache_dir) -> None:
        gmm = getattr(target, "gmm", None)
        if gmm is None:
            raise ValueError("metric gmm-fd needs the Gaussian-mixture oracle (model 'gmm')")
        self.reference = gmm.mean().numpy(), gmm.covariance().numpy()
        self.gmm = gmm

    def features(self, pixels, raw, labels, prompts, rows=None) -> np.ndarray:
        return raw.reshape(len(raw), -1).double().cpu().numpy()

    def score(self, features: np.ndarray) -> float:
        return frechet_distance(*gaussian_stats(features), *self.reference)

    #: exact-sample sets behind :meth:`floor`
    FLOOR_SETS = 8

    def floor(self, num_samples: int) -> tuple[float, float]:
        """FD of :attr:`FLOOR_SETS` sets of ``num_samples`` exact samples from the oracle (seeds 0…7 of
        their own stream): their mean and standard deviation."""
        values = [self.score(self.gmm.sample(num_samples, torch.Generator().manual_seed(2**31 + i))[0].numpy())
                  for i in range(self.FLOOR_SETS)]
        return float(np.mean(values)), float(np.std(values, ddof=1))


def _require_task(target: Any, name: str) -> None:
    if not hasattr(target, "measurement"):
        raise ValueError(f"metric {name} scores restorations: it needs a task")


class Residual(MetricBackend):
    """Measurement consistency of restorations: ‖Hx̂ − y‖² / (m σ_y²) per sample, averaged (the
    model-space samples, not 8-bit images: H acts on what the sampler produced)."""

    name = "residual"
    needs_raw = True
    ideal = 1.0  # below 1 fits the noise, above 1 ignores the measurement

    def setup(self, target, device, cache_dir) -> None:
        _require_task(target, self.name)
        self.target = target

    def features(self, pixels, raw, labels, prompts, rows=None) -> np.ndarray:
        t = self.target
        x = raw.double().cpu().reshape(len(raw), *t.shape)
        r = t.operator(x) - t.measurement(rows).to(x)
        return (r.reshape(len(r), -1).pow(2).sum(1) / (r[0].numel() * t.sigma_y**2)).numpy()[:, None]

    def score(self, features: np.ndarray) -> float:
        return float(features.mean())


class PSNR(MetricBackend):
    """Peak signal-to-noise ratio (dB) of each saved 8-bit restoration against its ground truth, averaged."""

    name = "psnr"
    lower_is_better = False

    def setup(self, target, device, cache_dir) -> None:
        _require_task(target, self.name)
        self.target = target

    def features(self, pixels, raw, labels, prompts, rows=None) -> np.ndarray:
        mse = (pixels.double() - self.target.truth_pixels(rows).double()).pow(2).flatten(1).mean(1)
        return (-10 * mse.clamp_min(1e-10).log10()).numpy()[:, None]

    def score(self, features: np.ndarray) -> float:
        return float(features.mean())


class PSNRMean(PSNR):
    """PSNR of the mean of the restorations of one measurement (``per_measurement`` samples each): the
    MMSE-like estimate, which rewards blur — secondary to the distribution metrics."""

    name = "psnr-mean"

    def features(self, pixels, raw, labels, prompts, rows=None) -> np.ndarray:
        ids = torch.tensor(self.target.measurement_ids(rows), dtype=torch.float64)[:, None]
        truth = self.target.truth_pixels(rows).double().flatten(1)
        return torch.cat([ids, truth, pixels.double().flatten(1)], 1).numpy()

    def score(self, features: np.ndarray) -> float:
        ids, rest = features[:, 0], features[:, 1:]
        truth, x = np.split(rest, 2, axis=1)
        psnrs = []
        for j in np.unique(ids):
            group = ids == j
            mse = float(((x[group].mean(0) - truth[group][0]) ** 2).mean())
            psnrs.append(-10 * np.log10(max(mse, 1e-10)))
        return float(np.mean(psnrs))


METRICS: dict[str, type[MetricBackend]] = {m.name: m for m in (FID, DigitFD, Accuracy, CLIPScore, GMMFD, Residual,
                                                                PSNR, PSNRMean)}


def make_metric(name: str, *, fid_reference=None, inception=None, clip_model=None) -> MetricBackend:
    """A metric backend by name (one of :data:`METRICS`)."""
    if name not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {name!r}")
    if name == "fid":
        return FID(fid_reference, inception)
    if name == "clip":
        return CLIPScore(clip_model)
    return METRICS[name]()
