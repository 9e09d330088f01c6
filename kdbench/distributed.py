"""Data-parallel training with torch.distributed: process-group set-up from the launcher's environment and the
few collective helpers the trainer needs.

A run is distributed when it is started with more than one process: by ``torchrun`` (RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR / MASTER_PORT) or by SLURM through submitit with one task per GPU (SLURM_PROCID /
SLURM_NTASKS / SLURM_LOCALID; the address of the first node comes from submitit's helper). NCCL on GPUs, gloo on
the CPU. Rank 0 alone writes logs, checkpoints, W&B and result.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def detect_world() -> World:
    """The process's place in the job, from torchrun's or SLURM's environment (single process otherwise)."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if env.get("SUBMITIT_EXECUTOR"):
        import submitit

        job = submitit.JobEnvironment()
        return World(job.global_rank, job.num_tasks, job.local_rank)
    return World()


def init(device_type: str) -> World:
    """Join the process group when the job has several processes; a no-op for a single process."""
    world = detect_world()
    if not world.distributed or dist.is_initialized():
        return world
    if "MASTER_ADDR" not in os.environ:  # launched by SLURM/submitit rather than torchrun
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size)
    return world


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is set on any rank (a collective: every rank must call it)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor (all with this rank's number of rows) concatenated along dim 0 over the ranks, in rank order;
    the ranks' row counts may differ (exchanged once for all the tensors). The tensors themselves for a single
    process. A collective: every rank must call it."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensors
    rows = tensors[0].shape[0]
    size = torch.tensor([rows], device=tensors[0].device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    gathered = []
    for tensor in tensors:
        padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
        padded[:rows] = tensor
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        gathered.append(torch.cat([part[:n] for part, n in zip(parts, counts)]))
    return tuple(gathered)
