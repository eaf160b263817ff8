"""Clean accuracy, and Monte-Carlo accuracy under weight noise, with statistics.

Paper B (Jacobson et al., arXiv 2602.07320), §B.1: one noise draw is held fixed for the whole test
set in a *trial*; several trials (≥ 5, better 10) give mean ± std; the clean weights are restored
after each trial; BatchNorm statistics are kept or recalibrated on training images after each draw.

Trial t of a noise model at strength s draws from a generator seeded by
``trial_seed(seed, name, s, t)`` (a SHA-256 of the four), so every model evaluated with the same
evaluation seed sees the same trial seeds: comparisons between models are *paired*. (Equal seeds
give equal corruptions for models of equal shape; for other models they are still independent of
everything else, which keeps runs reproducible.)

With ``batch_trials`` the T trials of a weight-noise model run in vmapped passes of n trials each,
the same draws giving the same numbers (:mod:`analoglearn.trials`, which says when it falls back and
what it costs).

Every result is a dataclass with ``to_dict()`` giving plain JSON-able data. Accuracies are in %.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from .errors import ConfigError
from .noise import from_config
from .trials import BatchedTrialsWarning as BatchedTrialsWarning  # re-exported: raised through noisy_accuracy
from .trials import Batches, Predict, batched_accuracies, trials_per_pass


class Corruption(Protocol):
    """What Monte-Carlo evaluation needs of a corruption: a weight-noise model
    (:class:`~analoglearn.noise.NoiseModel`) or the analog tile model
    (:class:`~analoglearn.analog.corruption.AnalogCorruption`)."""

    @property
    def label(self) -> str: ...
    @property
    def strength(self) -> float: ...
    @property
    def deterministic(self) -> bool: ...
    def with_strength(self, strength: float) -> Corruption: ...
    def describe(self) -> dict[str, Any]: ...
    def applied(self, module: nn.Module, generator: torch.Generator | None) -> AbstractContextManager[Any]: ...


BN_POLICIES = ("keep", "recalibrate")


def t_quantile_975(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom (NaN for dof < 1)."""
    if dof < 1:
        return float("nan")
    from scipy.stats import t  # local: scipy is only needed here

    return float(t.ppf(0.975, dof))


@dataclass
class Accuracy:
    """Accuracy of one pass over a loader: ``top1`` and ``top5`` in % (``top5`` None when K < 5)."""

    top1: float
    top5: float | None
    count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def accuracy(predict: Predict, loader: Batches) -> Accuracy:
    """Top-1 (and top-5 when the scores have K ≥ 5 classes) accuracy of ``predict`` over ``loader``.

    Args:
        predict: maps inputs ``(B, ...)`` to class scores ``(B, K)`` (e.g. ``Method.predict``).
        loader: an iterable of ``(x, y)`` batches, ``y`` integer labels ``(B,)``.
    """
    right = right5 = count = 0
    many = False
    for x, y in loader:
        scores = predict(x)
        y = y.to(scores.device)
        right += int((scores.argmax(1) == y).sum())
        if scores.shape[1] >= 5:
            many = True
            right5 += int((scores.topk(5, dim=1).indices == y[:, None]).any(1).sum())
        count += int(y.shape[0])
    if count == 0:
        raise ConfigError("cannot measure accuracy on an empty loader.")
    return Accuracy(100.0 * right / count, 100.0 * right5 / count if many else None, count)


def trial_seed(seed: int, noise_name: str, strength: float, trial: int) -> int:
    """The seed of trial ``trial``: 63 bits of SHA-256 of ``(seed, noise name, strength, trial)``."""
    text = f"{int(seed)}|{noise_name.lower()}|{float(strength)!r}|{int(trial)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def summarize(values: Sequence[float], bounds: tuple[float, float] = (0.0, 100.0)) -> dict[str, Any]:
    """mean, sample std (n − 1), min, max and the 95 % Student-t confidence interval of the mean
    (``None`` for a single value), clipped to ``bounds`` (accuracies in %: an interval past 100 %
    says nothing more than one that stops there)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else None
    low, high = bounds
    ci95 = None if half is None else [max(low, mean - half), min(high, mean + half)]
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "ci95": ci95}


@dataclass
class NoisyAccuracy:
    """Accuracy (%) under ``trials`` draws of one noise model at one strength.

    ``per_trial`` lists the top-1 accuracy of each trial and ``seeds`` its generator seed;
    ``ci95`` is mean ± t₀.₉₇₅(T−1)·std/√T, clipped to [0, 100] (``None`` when T = 1).
    ``deterministic``: the corruption draws nothing (quantisation, σ = 0), so the T trials are one
    evaluation, repeated (what T passes would give, at the cost of one).
    """

    noise: str
    strength: float
    trials: int
    mean: float
    std: float
    min: float
    max: float
    ci95: list[float] | None
    per_trial: list[float]
    seeds: list[int]
    per_trial_top5: list[float] | None = None
    bn: str = "keep"
    options: dict[str, Any] = field(default_factory=dict)
    deterministic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def recalibrated_batchnorm(model: nn.Module, loader: Batches | None, images: int) -> Iterator[None]:
    """Inside the block, BatchNorm running statistics are re-estimated on ``images`` training images.

    Statistics are reset, then averaged over forward passes of the first ``images`` examples of
    ``loader`` with only the BatchNorm layers in train mode: batch b of n_b images enters with momentum
    n_b/(n_1 + … + n_b), so ``running_mean`` is the mean over all N images (``running_var`` the
    image-weighted mean of the batch variances). The original statistics, momenta and modes are
    restored on exit.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        yield
        return
    if loader is None:
        raise ConfigError("bn='recalibrate' needs a calibration loader of training images.")
    saved = [(m.momentum, m.training, {k: b.clone() for k, b in m.named_buffers(recurse=False)})
             for m in layers]
    try:
        _recalibrate(model, layers, loader, images)
        yield
    finally:
        with torch.no_grad():
            for m, (momentum, mode, buffers) in zip(layers, saved):
                m.momentum, m.training = momentum, mode
                for k, b in m.named_buffers(recurse=False):
                    b.copy_(buffers[k])


@torch.no_grad()
def _recalibrate(model: nn.Module, layers: list[nn.Module], loader: Batches, images: int) -> None:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.train()
    seen = 0
    for x, _ in loader:
        part = x[: images - seen]
        seen += int(part.shape[0])
        for m in layers:
            m.momentum = part.shape[0] / seen
        model(part)
        if seen >= images:
            break
    for m, mode in modes:
        m.training = mode
    for m in layers:
        m.eval()


def noisy_accuracy(
    predict: Predict,
    model: nn.Module,
    loader: Batches,
    noise_model: Corruption,
    *,
    trials: int = 10,
    seed: int = 0,
    bn: str = "keep",
    calibration: Batches | None = None,
    calibration_images: int = 2000,
    batch_trials: bool | int = False,
    memory_budget: int | None = None,
) -> NoisyAccuracy:
    """Monte-Carlo accuracy of ``predict`` while ``model``'s weights carry one draw per trial.

    Args:
        predict: scores of a batch, computed with ``model`` (e.g. ``method.predict``).
        model: the module whose weights the noise corrupts in place (restored after each trial).
        loader: test batches ``(x, y)``; iterated once per trial.
        noise_model: the corruption, at its strength.
        trials: T ≥ 1 draws.
        seed: the evaluation seed (see :func:`trial_seed`).
        bn: ``keep`` the BatchNorm statistics, or ``recalibrate`` them after each draw.
        calibration: training batches for recalibration.
        calibration_images: N, the number of training images used to recalibrate.
        batch_trials: ``False`` (default): one pass over ``loader`` per trial. ``True``, or a number
            n ≥ 1: evaluate up to T (or n) trials in one pass, as many as ``memory_budget`` allows
            (see below); ``0`` is ``False``.
        memory_budget: bytes the trials of one batched pass may take (default: half the free memory
            of the model's device, :func:`~analoglearn.trials.default_memory_budget`).

    The noise is drawn with a CPU generator and moved to the model, so a trial's corruption is the
    same on every machine.

    Batched trials (:mod:`analoglearn.trials`): the same draws, their corrupted parameters stacked
    ``(n, *shape)`` and the model's eval-mode forward vmapped over them, once per test batch for n =
    min(batch_trials, T, budget // M) trials (M: :func:`~analoglearn.trials.trial_memory`). The result
    equals the sequential one trial by trial (in fp32 up to rounding of the scores). Where that cannot
    be guaranteed (not a plain weight draw, ``bn='recalibrate'`` with BatchNorm, a model vmap cannot
    run, a ``predict`` that is not the eval-mode forward) the trials run one pass each, with a
    :class:`~analoglearn.trials.BatchedTrialsWarning` saying why. A corruption that draws nothing is
    one pass anyway.

    Raises:
        ConfigError: bad ``trials``, ``bn`` or ``batch_trials``; an empty loader; with batched
            trials, a ``memory_budget`` smaller than one trial's estimate.
    """
    if trials < 1:
        raise ConfigError(f"trials must be ≥ 1; got {trials}.")
    if bn not in BN_POLICIES:
        raise ConfigError(f"bn must be one of {', '.join(BN_POLICIES)}; got {bn!r}.")
    seeds = [trial_seed(seed, noise_model.label, noise_model.strength, t) for t in range(trials)]
    limit = trials_per_pass(batch_trials, trials)
    results: list[Accuracy] | None = None
    if limit and not noise_model.deterministic:
        batched = batched_accuracies(predict, model, loader, noise_model, seeds, bn=bn, limit=limit,
                                     memory_budget=memory_budget)
        results = None if batched is None else [Accuracy(*r) for r in batched]
    if results is None:
        results = []
        for s in seeds[:1] if noise_model.deterministic else seeds:
            with noise_model.applied(model, torch.Generator().manual_seed(s)):
                calib = recalibrated_batchnorm(model, calibration, calibration_images)
                with calib if bn == "recalibrate" else contextlib.nullcontext():
                    results.append(accuracy(predict, loader))
    results *= trials // len(results)
    top1 = [r.top1 for r in results]
    top5 = [r.top5 for r in results] if results[0].top5 is not None else None
    return NoisyAccuracy(noise_model.label, noise_model.strength, trials, **summarize(top1), per_trial=top1,
                         seeds=seeds, per_trial_top5=top5, bn=bn, options=noise_model.describe(),
                         deterministic=noise_model.deterministic)


@dataclass
class RobustnessCurve:
    """Noisy accuracy over a grid of strengths and the area under the mean-accuracy curve.

    ``area`` = ∫ mean accuracy d(strength) by the trapezoid rule over the sorted grid (% × strength
    unit); ``normalized_area`` = area / (s_max − s_min), a mean accuracy in % (None for one point).
    """

    noise: str
    strengths: list[float]
    points: list[NoisyAccuracy]
    area: float
    normalized_area: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trapezoid(xs: Sequence[float], ys: Sequence[float]) -> float:
    """∫ y dx by the trapezoid rule over points sorted by x."""
    pts = sorted(zip(xs, ys))
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(pts))


def robustness_curve(
    predict: Predict,
    model: nn.Module,
    loader: Batches,
    noise_model: Corruption,
    strengths: Sequence[float],
    **kwargs: Any,
) -> RobustnessCurve:
    """:func:`noisy_accuracy` at every strength of ``strengths`` (keyword arguments passed on)."""
    if not strengths:
        raise ConfigError("a robustness curve needs at least one strength.")
    points = [
        noisy_accuracy(predict, model, loader, noise_model.with_strength(s), **kwargs) for s in strengths
    ]
    xs = [p.strength for p in points]
    area = trapezoid(xs, [p.mean for p in points])
    span = max(xs) - min(xs)
    return RobustnessCurve(noise_model.label, xs, points, area, area / span if span > 0 else None)


def evaluate_noise(
    predict: Predict, model: nn.Module, loader: Batches, specs: Sequence[dict[str, Any]], **kwargs: Any
) -> list[RobustnessCurve]:
    """One robustness curve per config entry ``{name, strengths, **options}`` (the ``eval.noise`` list).

    Keyword arguments (trials, seed, bn, calibration, calibration_images, batch_trials, memory_budget)
    go to :func:`noisy_accuracy`.
    """
    curves = []
    for spec in specs:
        strengths = spec.get("strengths")
        if not strengths:
            raise ConfigError(f"noise entry {spec} needs a non-empty 'strengths' list.")
        curves.append(robustness_curve(predict, model, loader, from_config(spec), strengths, **kwargs))
    return curves
