"""Anytime evaluation: quality against NFEs for nested configurations, vanilla x̂0 previews and
the envelope (separate exact-N runs), on any model, with FID, digit-FD, accuracy, CLIP score or the
exact Gaussian-mixture Fréchet distance. ``nested-diffusion evaluate`` is its command line.

>>> from nested_diffusion.evaluation import EvalConfig, evaluate, load_target, make_metric, parse_method
>>> target = load_target("gmm")                                          # doctest: +SKIP
>>> methods = [parse_method("nested", "10x10"), parse_method("vanilla", "ddim:1", budget=100)]
>>> result = evaluate(target, methods, [make_metric("gmm-fd")],          # doctest: +SKIP
...                   EvalConfig(2000, (10, 20, 50, 100)), "eval-out")
"""

from .plan import default_checkpoints, default_methods, default_metrics
from .backends import METRICS, MetricBackend, make_metric
from .methods import Method, frame_at, parse_method
from .report import (EFFICIENCY_TOLERANCE, anytime_score, efficiency_rows, efficiency_table, envelope_reference,
                     envelope_winners, load_results, markdown_table, nfe_efficiency, plot_curves, value_at, write_results)
from .runner import DistributedContext, EvalConfig, Result, check_methods, evaluate, sample_generators, sample_seed
from .restoration import RestorationTarget
from .targets import GMMTarget, PipelineTarget, load_target

__all__ = ["METRICS", "MetricBackend", "make_metric", "Method", "frame_at", "parse_method", "markdown_table",
           "anytime_score", "value_at", "load_results", "plot_curves", "write_results", "nfe_efficiency",
           "efficiency_rows", "efficiency_table", "envelope_reference", "envelope_winners", "EFFICIENCY_TOLERANCE",
           "DistributedContext", "EvalConfig", "Result", "sample_seed", "sample_generators", "check_methods",
           "evaluate", "GMMTarget", "PipelineTarget", "RestorationTarget", "load_target", "default_checkpoints",
           "default_methods", "default_metrics"]
