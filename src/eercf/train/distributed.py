"""Multi-process helpers for ``torchrun`` (NCCL on GPUs, Gloo on CPU).

Every process computes the loss over the whole global batch (its own features plus those
gathered from the others), so every process holds the same loss. ``all_gather_with_grad``
sums the gradients of that loss over the processes in its backward pass and hands each its
own slice; ``average_gradients`` then averages parameter gradients as DDP would. Together a
W-process run takes exactly the step of a 1-process run over the same global batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """Where this process sits: ``rank`` of ``world`` processes, on ``device``."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> Distributed:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), or run alone.
    ``device`` None picks this process's GPU (``LOCAL_RANK``) when there is one, else CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    return Distributed(rank=rank, world=world, device=dev)


def close_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _AllGather(torch.autograd.Function):
    """Concatenate every process's ``x`` (same shape on all); gradients reach the local slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Each process back-propagates its own copy of the same loss: the gradient of the
        # total for this process's rows is the sum over processes of their copies.
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` of every process, concatenated in rank order (identity when alone)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    if not x.requires_grad:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)
    return _AllGather.apply(x)


def average_gradients(parameters) -> None:
    """Average ``.grad`` over processes (one all-reduce per tensor, launched together).
    Done by hand rather than by DDP hooks because a step may run several backward passes
    (gradient accumulation over cached features) and only the last one should communicate."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    grads = []
    for p in parameters:
        if p.grad is None:  # keep every process's list of tensors the same
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    for work in [dist.all_reduce(g, async_op=True) for g in grads]:
        work.wait()
    for g in grads:
        g.div_(world)


def broadcast_object(obj, src: int = 0):
    """``obj`` of process ``src`` on every process (identity when alone)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
