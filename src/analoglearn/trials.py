"""Batched Monte-Carlo trials: T weight-noise draws evaluated in one vmapped pass over the test set.

The sequential path of :func:`analoglearn.evaluate.noisy_accuracy` corrupts the model in place once
per trial and runs the whole test set through it, T passes in all. The batched path
(``noisy_accuracy(batch_trials=...)``) makes the same draws (trial i: ``noise_model.applied`` with a
generator seeded by its trial seed, exactly as the sequential path), copies the corrupted parameters
into stacked tensors ``(n, *shape)`` and runs ``predict`` once per test batch for n trials together,
``torch.func.vmap`` over ``torch.func.functional_call`` (scores ``(n, B, K)``; buffers, BatchNorm
statistics included, and uncorrupted parameters shared). ``predict`` may be any function of the model's
parameters: the model's eval-mode forward, or a Hopfield network's relaxation (``method.predict``: the
whole fixed-iteration relaxation of the n draws runs as one, its products batched over the draws). The draws are the
sequential path's, so the per-trial accuracies are equal (in fp64 exactly; in fp32 up to rounding of
the scores, ~1e-6, where a near-tie may flip one prediction).

Memory: one trial adds about M = P + 2·A bytes to a pass (:func:`trial_memory`): P the corrupted
parameters, A the test batch plus every leaf module's output on it (for a Hopfield network, whose
modules are never called, eight copies of its state: states, updates, drives, feedbacks), doubled
for the operators' temporaries. A pass holds n = min(batch_trials, T, budget // M) trials, the budget being
``memory_budget`` bytes or half the memory free on the model's device (:func:`default_memory_budget`);
a budget below one trial is refused.

Fallback: the trials run one pass each, with a :class:`BatchedTrialsWarning` saying why, when the
corruption is not a plain weight draw (the analog tile model, a noise model that overrides
``applied``), ``bn='recalibrate'`` on a model with BatchNorm, vmap cannot run the model
(data-dependent control flow, no batching rule; e.g. a relaxation with a tolerance stop, which reads
its residual on the host), or trial 0's batched scores on the first test batch differ from
``predict``'s run sequentially (``predict`` is not a function of the parameters alone: train-mode
dropout, a hidden random draw).

Speed: on CPU it is not faster: about 0.5× the sequential speed (twice the time) for LeNet and VGG-11
at T = 10, measured in one run on a loaded machine (``benchmarks/noise_eval_speed.py``; the cause was
not profiled). The gain is expected on GPUs, where one trial's forward over a test batch leaves the
device underused; it has not been measured. The default is therefore the sequential path.

This module depends on nothing of :mod:`analoglearn.evaluate`, which calls it.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .noise import NoiseModel

Predict = Callable[[torch.Tensor], torch.Tensor]
"""Maps inputs ``(B, ...)`` to class scores ``(B, K)`` (e.g. ``Method.predict``)."""
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
"""Test batches ``(x, y)``, ``y`` integer labels ``(B,)``."""
TrialAccuracy = tuple[float, float | None, int]
"""One trial's (top-1 %, top-5 % or None when K < 5, test examples): the fields of ``evaluate.Accuracy``."""


class BatchedTrialsWarning(UserWarning):
    """``batch_trials`` was asked for but the trials ran one pass each (the message says why)."""


class _CannotBatch(Exception):
    """Internal: the batched path cannot reproduce the sequential one; the message says why."""


def trials_per_pass(batch_trials: bool | int, trials: int) -> int:
    """The most trials per pass ``batch_trials`` asks for: T for ``True``, n for a number n, 0 (the
    sequential path) for ``False`` or 0."""
    if batch_trials is True:
        return trials
    if batch_trials is False:
        return 0
    if not isinstance(batch_trials, int) or batch_trials < 0:
        raise ConfigError(f"batch_trials must be true, false or a number of trials ≥ 0; got {batch_trials!r}.")
    return batch_trials


def default_memory_budget(device: torch.device | str = "cpu") -> int:
    """Half the memory free on ``device``, in bytes: ``torch.cuda.mem_get_info`` (plus torch's unused
    cache) on CUDA; on CPU ``MemAvailable`` of ``/proc/meminfo`` (else ``os.sysconf`` available pages ×
    page size); 1 GiB where neither can be read."""
    device = torch.device(device)
    if device.type == "cuda":  # free on the card, plus what torch's cache holds but no tensor uses
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return (torch.cuda.mem_get_info(device)[0] + cached) // 2
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kib * 1024 // 2
    except (OSError, StopIteration, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, OSError, ValueError):
        return 2**30


def _nbytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 0


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode inside the block; the modes restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def trial_memory(model: nn.Module, x: torch.Tensor, noise_model: NoiseModel) -> int:
    """Estimated bytes one trial adds to a batched pass over the test batch ``x`` ``(B, ...)``.

    M = P + 2·A, where P is the size of the parameters ``noise_model`` corrupts (each trial holds its
    own copy of them in the stacked ``(T, ...)`` tensors) and A the size of ``x`` plus the outputs of
    every leaf module in one forward pass of ``x`` (eval mode, clean weights), measured with forward
    hooks. A counts every activation as if all were alive at once (a no-grad pass frees them as it
    goes), and the factor 2 leaves room for the operators' temporaries (im2col buffers, the copies
    vmap makes when it regroups a batched convolution): a conservative bound. :func:`batched_accuracies`
    measures it on the first test batch (in a loader of equal batches but the last, the largest).
    """
    params = sum(_nbytes(p) for _, p in noise_model.select(model))
    shapes = getattr(model, "layer_shapes", None)
    if shapes is not None:  # a Hopfield network: its relaxation holds states, not module outputs
        itemsize = next(model.parameters()).element_size()
        state = sum(x.shape[0] * math.prod(shape) * itemsize for shape in shapes)
        return params + 2 * (_nbytes(x) + 8 * state)
    sizes: list[int] = []
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(_nbytes(out))) for m in leaves]
    try:
        with _eval_mode(model):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return params + 2 * (_nbytes(x) + sum(sizes))


def draw_trials(model: nn.Module, noise_model: NoiseModel, seeds: Sequence[int]) -> dict[str, torch.Tensor]:
    """The corrupted parameters of the trials ``seeds``, stacked: ``{name: (n, *shape)}``, n = len(seeds).

    Trial i is drawn exactly as the sequential path draws it: ``noise_model.applied`` on ``model``
    with a generator seeded by ``seeds[i]``; the corrupted tensors are copied out and the clean
    weights restored. Only the parameters ``noise_model`` selects are stacked.
    """
    stacked: dict[str, torch.Tensor] = {}
    for i, s in enumerate(seeds):
        with noise_model.applied(model, torch.Generator().manual_seed(s)):
            for name, p in noise_model.select(model):
                if name not in stacked:
                    stacked[name] = torch.empty((len(seeds), *p.shape), dtype=p.dtype, device=p.device)
                stacked[name][i].copy_(p.detach())
    return stacked


class _Predicting(nn.Module):
    """``predict`` as the forward of a module holding ``model``, so that ``functional_call`` can swap
    the model's parameters under any prediction function (a Hopfield relaxation included)."""

    def __init__(self, model: nn.Module, predict: Predict) -> None:
        super().__init__()
        self.model, self._predict = model, predict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._predict(x)


def batched_forward(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                    predict: Predict | None = None) -> torch.Tensor:
    """Scores ``(n, B, K)`` of ``predict`` (default: ``model``'s eval-mode forward) on ``x`` ``(B, ...)``
    with each of the n parameter sets ``params`` ``{name: (n, *shape)}`` of ``model``
    (``torch.func.vmap`` over ``torch.func.functional_call``; the other parameters and every buffer
    shared). Raises what vmap raises for a computation it cannot run."""
    if predict is None:
        def forward(p: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(model, p, (inputs,))
    else:
        wrapper = _Predicting(model, predict)

        def forward(p: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(wrapper, {f"model.{k}": v for k, v in p.items()}, (inputs,))

    with _eval_mode(model):
        return torch.func.vmap(forward, in_dims=(0, None))(params, x)


def _static_obstacle(model: nn.Module, noise_model: object, bn: str) -> str | None:
    """Why the trials of ``noise_model`` cannot be batched whatever the data, or None."""
    kind = type(noise_model).__name__
    if not isinstance(noise_model, NoiseModel):
        return f"{kind} is not a weight-noise model (its trials change the forward computation)"
    if type(noise_model).applied is not NoiseModel.applied:
        return f"{kind} overrides applied(), so a trial may be more than a weight draw"
    if bn == "recalibrate" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "bn='recalibrate' re-estimates the BatchNorm statistics after every draw"
    return None


def _guarded(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
             predict: Predict | None = None) -> torch.Tensor:
    """:func:`batched_forward`, its failures turned into :class:`_CannotBatch`."""
    try:
        return batched_forward(model, params, x, predict)
    except Exception as e:  # no batching rule, data-dependent control flow, out of memory, ...
        first = str(e).splitlines()[0] if str(e) else ""
        raise _CannotBatch(f"vmap cannot run {type(model).__name__} ({type(e).__name__}: {first})") from e


def _check(scores: torch.Tensor, reference: torch.Tensor) -> None:
    """Refuse the batched scores of trial 0 unless they match the sequential ``predict``'s to rounding
    (relative tolerance √eps of the dtype: 3.5e-4 in fp32, 1.5e-8 in fp64)."""
    tol = torch.finfo(reference.dtype).eps ** 0.5 if reference.is_floating_point() else 0.0
    scale = max(1.0, float(reference.abs().max()))
    same = scores.shape == reference.shape and scores.dtype == reference.dtype and scores.device == reference.device
    if not same or not torch.allclose(scores, reference, rtol=tol, atol=tol * scale):
        raise _CannotBatch("predict is not the model's eval-mode forward (trial 0's scores differ)")


def _count(model: nn.Module, stacked: dict[str, torch.Tensor], loader: Batches,
           check: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
           predict: Predict | None = None) -> list[TrialAccuracy]:
    """Top-1 and top-5 accuracy of each of the n stacked trials over ``loader`` (as ``evaluate.accuracy``
    counts them); ``check(x, scores of trial 0)`` is called on the first batch."""
    right = right5 = None
    count = 0
    many = False
    for x, y in loader:
        scores = _guarded(model, stacked, x, predict)  # (n, B, K)
        if check is not None and right is None:
            check(x, scores[0])
        y = y.to(scores.device)
        hits = (scores.argmax(-1) == y).sum(-1)
        right = hits if right is None else right + hits
        if scores.shape[-1] >= 5:
            many = True
            hits5 = (scores.topk(5, dim=-1).indices == y[None, :, None]).any(-1).sum(-1)
            right5 = hits5 if right5 is None else right5 + hits5
        count += int(y.shape[0])
    if right is None or count == 0:
        raise ConfigError("cannot measure accuracy on an empty loader.")
    tops5 = right5.tolist() if many and right5 is not None else [None] * len(right)
    return [(100.0 * r / count, 100.0 * r5 / count if r5 is not None else None, count)
            for r, r5 in zip(right.tolist(), tops5)]


@torch.no_grad()
def _batched_trials(predict: Predict, model: nn.Module, loader: Batches, noise_model: NoiseModel,
                    seeds: Sequence[int], limit: int, memory_budget: int | None) -> list[TrialAccuracy]:
    """The accuracies of the trials ``seeds``, at most ``limit`` (and what fits the budget) per pass."""
    first = next(iter(loader), None)
    if first is None:
        raise ConfigError("cannot measure accuracy on an empty loader.")
    try:
        per_trial = trial_memory(model, first[0], noise_model)
    except Exception as e:
        raise _CannotBatch(f"the model's forward failed on a test batch ({type(e).__name__})") from e
    device = next((p.device for p in model.parameters()), first[0].device)
    budget = default_memory_budget(device) if memory_budget is None else int(memory_budget)
    n = min(limit, len(seeds), budget // per_trial)
    if n < 1:
        raise ConfigError(f"batch_trials: one trial needs about {per_trial} bytes, more than the memory "
                          f"budget of {budget} bytes; raise memory_budget or set batch_trials to false.")

    def check(x: torch.Tensor, scores: torch.Tensor) -> None:  # trial 0 on the first batch, both ways
        with noise_model.applied(model, torch.Generator().manual_seed(seeds[0])):
            _check(scores, predict(x))

    forward = None if getattr(model, "layer_shapes", None) is None else predict  # Hopfield: relax, not call
    results: list[TrialAccuracy] = []
    for start in range(0, len(seeds), n):
        stacked = draw_trials(model, noise_model, seeds[start : start + n])
        results += _count(model, stacked, loader, check if start == 0 else None, forward)
    return results


def batched_accuracies(predict: Predict, model: nn.Module, loader: Batches, noise_model: object,
                       seeds: Sequence[int], *, bn: str, limit: int,
                       memory_budget: int | None) -> list[TrialAccuracy] | None:
    """The accuracy of every trial ``seeds`` by batched passes of at most ``limit`` trials (and what fits
    ``memory_budget``), or None after a :class:`BatchedTrialsWarning` saying why they cannot be batched
    (the caller then runs one pass per trial).

    Raises:
        ConfigError: an empty loader; a ``memory_budget`` smaller than one trial's estimate.
    """
    reason = _static_obstacle(model, noise_model, bn)
    if reason is None and isinstance(noise_model, NoiseModel):
        try:
            return _batched_trials(predict, model, loader, noise_model, seeds, limit, memory_budget)
        except _CannotBatch as e:
            reason = str(e)
    warnings.warn(f"batch_trials: one pass per trial instead: {reason}.", BatchedTrialsWarning, stacklevel=3)
    return None
