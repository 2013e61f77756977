"""Gathering a tensor from every training process with gradients (docs/method.md, section 3.6)."""

from __future__ import annotations

import torch


def gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's ``[n, ...]`` tensor concatenated in rank order, with gradients flowing back to the process
    that owns each block (the backward sums every process's gradient of its block); and the row offset of this
    process's own block. One process (or no process group): ``(tensor, 0)``. All processes pass the same shape.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    from torch.distributed import _functional_collectives as collectives

    # all_gather_single_autograd (torch >= 2.9) supersedes all_gather_tensor_autograd and nn.functional.all_gather
    gather = getattr(collectives, "all_gather_single_autograd", None) or collectives.all_gather_tensor_autograd
    gathered = gather(tensor.contiguous(), 0, dist.group.WORLD)
    return collectives.wait_tensor(gathered), dist.get_rank() * tensor.shape[0]
