"""The trials folded into the batch dimension: one pass of a model (or a Hopfield relaxation) over
n·b rows, trial t's parameters acting on rows t·b … (t+1)·b − 1 and every other operator once.

The CPU path of :mod:`analoglearn.trials`'s batched Monte-Carlo trials (its module doc, "Folding",
says why and what was measured): :func:`folded_forward` gives the scores of n stacked parameter
sets, or raises :class:`CannotFold` where the fold does not apply. It depends on nothing of
:mod:`analoglearn.trials`, which calls it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Predict = Callable[[torch.Tensor], torch.Tensor]
"""Maps inputs ``(B, ...)`` to class scores ``(B, K)`` (e.g. ``Method.predict``)."""


class CannotFold(Exception):
    """The folded path cannot run this model or ``predict`` (the vmapped one may); the message says why."""


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode inside the block; the modes restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


FOLD_ROWS = 256
"""Trial-examples per folded pass of a feed-forward model: a pass runs n trials × ⌈FOLD_ROWS / n⌉
examples of the test batch, so that it holds the activations of one sequential forward of about
FOLD_ROWS examples, which stay in the CPU caches (:mod:`analoglearn.trials`, Folding; measured best of 128–512)."""

FOLD_ROWS_RELAXATION = 128
"""The same for a Hopfield relaxation (its states are rewritten 60 times: measured best of 128–768)."""

CHANNELS_LAST = True
"""Whether a folded feed-forward pass over images ``(B, C, H, W)`` runs in the channels-last layout."""

_CONV_FORWARDS = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward)


def _per_trial(module: nn.Module, path: str,
               mine: dict[str, torch.Tensor]) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``op(inputs, t)``: ``module``'s forward with trial t's ``mine`` ``{weight|bias: (n, *shape)}``
    (its other parameters its own). A plain ``Conv1d/2d/3d``, ``Linear`` or ``BatchNorm`` with running
    statistics only (evaluated in eval mode); anything else raises :class:`CannotFold`."""
    kind = type(module)
    if not set(mine) <= {"weight", "bias"}:
        raise CannotFold(f"{kind.__name__} {path!r} has a corrupted tensor other than its weight and bias")

    def param(attr: str, t: int) -> torch.Tensor | None:
        value = mine.get(attr)
        return getattr(module, attr) if value is None else value[t]

    if kind.forward in _CONV_FORWARDS:
        return lambda x, t: module._conv_forward(x, param("weight", t), param("bias", t))
    if kind.forward is nn.Linear.forward:
        def linear(x: torch.Tensor, t: int) -> torch.Tensor:
            return F.linear(x, param("weight", t), param("bias", t))
        linear.stacked = (mine.get("weight"), mine.get("bias"), module)  # type: ignore[attr-defined]
        return linear
    batchnorm = nn.modules.batchnorm._BatchNorm
    if (isinstance(module, batchnorm) and kind.forward is batchnorm.forward and module.running_mean is not None
            and module.running_var is not None):
        return lambda x, t: F.batch_norm(x, module.running_mean, module.running_var, param("weight", t),
                                         param("bias", t), False, 0.0, module.eps)
    raise CannotFold(f"no per-trial forward for {kind.__name__} {path!r}")


class _Fold:
    """n stacked trials folded into the batch dimension: inputs ``(n·b, ...)`` (trial-major), every module
    that owns a corrupted parameter running trial t's parameters on rows ``t·b … (t+1)·b − 1``.

    A feed-forward model's corrupted modules get a per-trial forward (:func:`_per_trial`); a Hopfield
    network's interaction weights are read per trial through :func:`~analoglearn.energy.interactions.reading`
    (every product of a relaxation goes through ``read``). Every other operator (ReLU, pooling,
    BatchNorm with shared parameters, the relaxation's sums and clamps, max-unpooling) runs once on
    the folded batch, with the same kernel per example as one trial's sequential pass.
    """

    def __init__(self, model: nn.Module, params: dict[str, torch.Tensor]) -> None:
        self.n, self.rows = len(next(iter(params.values()))), 0
        self.sites: dict[nn.Module, torch.Tensor] = {}
        self._cast: dict[tuple[nn.Module, torch.dtype, torch.device], torch.Tensor] = {}
        rest = dict(params)
        if getattr(model, "layer_shapes", None) is not None:  # a Hopfield network: its products go through read
            from .analog.read import linear_transposed
            from .energy.interactions import Interaction, _local

            self._dense_ops = {F.linear: True, linear_transposed: False}  # op: is it the forward read

            if getattr(_local, "readers", None):
                raise CannotFold("a reader is already routing the network's products")
            names = {id(p): name for name, p in model.named_parameters()}
            for site in model.modules():
                if isinstance(site, Interaction) and names.get(id(site.weight)) in rest:
                    self.sites[site] = rest.pop(names[id(site.weight)])
        owned: dict[str, dict[str, torch.Tensor]] = {}
        for name, value in rest.items():
            path, _, attr = name.rpartition(".")
            owned.setdefault(path, {})[attr] = value
        self.modules = [(module, _per_trial(module, path, mine))
                        for path, mine in owned.items() for module in [model.get_submodule(path)]]

    def split(self, x: object) -> tuple[torch.Tensor, ...]:
        """The n per-trial blocks of rows of a folded input."""
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] != self.n * self.rows:
            raise CannotFold("a corrupted module was called on something other than the folded batch")
        return x.split(self.rows)

    def read(self, op: Callable[..., torch.Tensor], x: torch.Tensor, weight: torch.Tensor,
             site: nn.Module) -> torch.Tensor:
        """The reader of :func:`~analoglearn.energy.interactions.reading`: trial t's weight (cast as the
        relaxation casts its own) on trial t's rows."""
        stacked = self.sites.get(site)
        if stacked is None:
            return op(x, weight)
        key = (site, weight.dtype, weight.device)
        if key not in self._cast:
            self._cast[key] = stacked.to(dtype=weight.dtype, device=weight.device)
        w = self._cast[key]
        parts = self.split(x)
        if x.dim() == 2 and op in self._dense_ops:  # dense: one bmm, no concatenation
            return self._dense(x, w, self._dense_ops[op])
        return torch.cat([op(part, w[t]) for t, part in enumerate(parts)])

    def _forward(self, op: Callable[[torch.Tensor, int], torch.Tensor]) -> Callable[..., torch.Tensor]:
        stacked = getattr(op, "stacked", None)  # a Linear: one bmm over the trials for 2-D inputs

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if args or kwargs:
                raise CannotFold("a corrupted module was called with more than one input")
            parts = self.split(x)
            if stacked is not None and x.dim() == 2:
                weight, bias, module = stacked
                return self._dense(x, module.weight if weight is None else weight, True,
                                   module.bias if bias is None else bias)
            return torch.cat([op(part, t) for t, part in enumerate(parts)])
        return forward

    def _dense(self, x: torch.Tensor, weight: torch.Tensor, forward: bool,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        """The n dense products of folded ``x`` ``(n·b, N)`` in one ``bmm``: ``x_t·W_tᵀ (+ b_t)`` (``forward``,
        ``F.linear``) or ``x_t·W_t`` (the transposed read); ``weight`` ``(n, out, in)`` or one shared
        ``(out, in)``, ``bias`` ``(n, out)``, ``(out,)`` or None. Written into one tensor: no concatenation."""
        w = weight if weight.dim() == 3 else weight.expand(self.n, *weight.shape)
        w = w.transpose(1, 2) if forward else w
        xs = x.reshape(self.n, self.rows, x.shape[-1])
        if bias is None:
            y = torch.bmm(xs, w)
        else:
            b = bias if bias.dim() == 2 else bias.expand(self.n, bias.shape[-1])
            y = torch.baddbmm(b.unsqueeze(1), xs, w)
        return y.view(self.n * self.rows, y.shape[-1])

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The per-trial forwards (instance attributes shadowing the class's) and reader, inside the block."""
        saved = [(m, m.__dict__.get("forward")) for m, _ in self.modules]
        try:
            for module, op in self.modules:
                module.__dict__["forward"] = self._forward(op)
            if self.sites:
                from .energy.interactions import reading

                with reading(self.read):
                    yield
            else:
                yield
        finally:
            for module, old in saved:
                if old is None:
                    module.__dict__.pop("forward", None)
                else:
                    module.__dict__["forward"] = old


def folded_forward(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                   predict: Predict | None = None, *, rows: int | None = None) -> torch.Tensor:
    """Scores ``(n, B, K)`` of ``predict`` (default: ``model``'s eval-mode forward) on ``x`` ``(B, ...)``
    with each of the n parameter sets ``params`` ``{name: (n, *shape)}``, as :func:`analoglearn.trials.batched_forward`,
    the trials folded into the batch dimension (:class:`_Fold`) instead of vmapped: ``rows`` examples
    of ``x`` at a time (default all), each pass running ``predict`` once on ``n·rows`` examples.

    Raises :class:`CannotFold` where the fold does not apply (a corrupted
    parameter outside a plain Conv/Linear/BatchNorm or a Hopfield interaction weight, a corrupted
    module not called on the folded batch), and what ``predict`` raises.
    """
    fold = _Fold(model, params)
    run = model if predict is None else predict
    rows = x.shape[0] if rows is None else max(1, int(rows))
    layout = torch.channels_last if predict is None and x.dim() == 4 and CHANNELS_LAST else torch.contiguous_format
    out = []
    with eval_mode(model), fold.installed():
        for part in x.split(rows):
            b = fold.rows = part.shape[0]
            folded = part.unsqueeze(0).expand(fold.n, *part.shape).reshape(fold.n * b, *part.shape[1:])
            scores = run(folded.contiguous(memory_format=layout))
            if not isinstance(scores, torch.Tensor) or scores.dim() == 0 or scores.shape[0] != fold.n * b:
                raise CannotFold("predict's scores are not one row per folded example")
            out.append(scores.view(fold.n, b, *scores.shape[1:]))
    return out[0] if len(out) == 1 else torch.cat(out, 1)
