"""Data-parallel training on ``torch.distributed``, started by ``torchrun`` (gloo on CPU, NCCL on GPU).

    torchrun --standalone --nproc_per_node 2 -m analoglearn train --config run.yaml --out runs

**Sharding.** Every worker draws the same global batch (the loader's randomness depends only on
(seed, epoch, batch)) and keeps its slice r of ``tensor_split(world)``: worker r holds b_r of the B
examples (the last batch of an epoch may split unevenly).

**Gradients.** Each closure call is followed by one all-reduce of the flattened gradients, weighted
by shard size, ĝ = Σ_r (b_r/B)·ĝ_r, and of the loss and correct counts, so every call's ``.grad``
is the global batch's gradient whatever filled it: backprop, an energy-based estimator that writes
``.grad`` without a backward pass (where DDP's hooks would never fire), TBP/RBP's ``autograd.grad``.
This is also why no ``DistributedDataParallel`` wrapper is used: SAM's two passes, RWP's K draws and
the estimators all synchronise the same way, and two workers equal one worker with the same global
batch within float tolerance.

- SAM/ASAM: the first pass is all-reduced too, so ε comes from the global gradient;
  ``perturb.local_ascent: true`` keeps each worker's first pass local (ε from its own shard, as with
  ``no_sync`` on the first pass), only the second is all-reduced.
- RWP: every worker draws the same ε by default (the generators start from the same seed);
  ``perturb.per_worker_noise: true`` gives each worker its own stream.

**Writes and state.** Only rank 0 writes the run directory (checkpoints, metrics, summary); a
checkpoint holds every worker's method state and generator (``workers``), gathered at the same step
on all workers, so ``--resume`` with the same world size continues exactly. Stop signals are agreed
on at every batch, so all workers checkpoint and stop at the same batch. BatchNorm buffers are taken
from rank 0 before each evaluation and checkpoint (as DDP broadcasts them). Multi-node runs need a
file system that every node sees for the run directory::

    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        -m analoglearn train --config run.yaml --out /shared/runs
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .method import Closure, Outcome


@dataclass(frozen=True)
class World:
    """This process's place among the workers (``torchrun``'s RANK, WORLD_SIZE, LOCAL_RANK)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether there is more than one worker."""
        return self.size > 1

    @property
    def writer(self) -> bool:
        """Whether this process writes the run directory (rank 0)."""
        return self.rank == 0


def world() -> World:
    """The world of ``torchrun``'s environment; the process group is initialised on first use (gloo for
    CPU tensors, NCCL for CUDA ones when the machine has CUDA). Without ``WORLD_SIZE`` > 1: one worker."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shard(x: torch.Tensor, y: torch.Tensor, w: World) -> tuple[torch.Tensor, torch.Tensor]:
    """Worker ``w.rank``'s slice of a global batch (``tensor_split``: sizes differ by at most one)."""
    if not w.active:
        return x, y
    return x.tensor_split(w.size)[w.rank], y.tensor_split(w.size)[w.rank]


def synced(closure: Closure, params: list[nn.Parameter], count: int, total: int, w: World,
           local_calls: int = 0) -> Closure:
    """``closure`` followed by the all-reduce of the module doc: ``.grad`` ← Σ_r (b_r/B)·ĝ_r, the loss
    weighted alike, correct counts summed. The first ``local_calls`` calls reduce only loss and counts.

    The shares b_r/B are applied before a sum in the parameters' dtype, so two workers give exactly
    the gradient of one process with ``train.accumulate: 2`` (the same two halves, summed in the same
    precision; a + b = b + a in floating point), and the full batch's within rounding.

    Args:
        closure: the method's closure on this worker's shard of ``count`` examples.
        params: the parameters whose gradients are reduced (every worker the same list, same order).
        count: b_r, the size of this worker's shard.
        total: B, the size of the global batch.
    """
    calls = 0
    share = count / total

    def run() -> Outcome:
        nonlocal calls
        outcome = closure()
        grads = [] if calls < local_calls else params
        calls += 1
        for dtype in dict.fromkeys(p.dtype for p in grads):  # one flat all-reduce per dtype
            group = [p for p in grads if p.dtype == dtype]
            flat = torch.cat([p.grad.detach().flatten() * share if p.grad is not None else
                              torch.zeros(p.numel(), dtype=dtype, device=p.device) for p in group])
            dist.all_reduce(flat)
            for p, value in zip(group, flat.split([p.numel() for p in group])):
                p.grad = value.view_as(p)
        loss = outcome.loss.detach()
        stats = torch.stack([loss * share if share != 1.0 else loss,
                             torch.tensor(float(outcome.correct), dtype=loss.dtype, device=loss.device)])
        dist.all_reduce(stats)
        return Outcome(stats[0], round(float(stats[1])))

    return run


def agree(flag: bool, w: World) -> bool:
    """Whether ``flag`` holds on any worker (an all-reduce of one number; the flag itself without a world)."""
    if not w.active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def gather(obj: Any, w: World) -> list[Any]:
    """``obj`` of every worker, in rank order (on every worker)."""
    if not w.active:
        return [obj]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: nn.Module, w: World) -> None:
    """Every buffer (BatchNorm statistics) set to rank 0's."""
    if w.active:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def first_failure(error: BaseException | None, w: World, describe: Callable[[int], str]) -> BaseException | None:
    """``error`` if this worker failed, else an error naming the first worker that did (None if none):
    all workers learn together whether a run may start."""
    if not w.active:
        return error
    failed = gather(error is not None, w)
    if error is not None or not any(failed):
        return error
    from .errors import AnalogLearnError

    return AnalogLearnError(describe(failed.index(True)))
