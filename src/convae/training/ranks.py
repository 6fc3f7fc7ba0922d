"""This process's place in a torchrun job: the one thing the loop needs to know about DDP."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Ranks:
    """This process's place in a ``torchrun`` job, read from the variables torchrun sets.

    Outside torchrun it is rank 0 of 1 and every method is a no-op, so the single-process
    loop is the same code. Under torchrun: gloo on CPU, nccl on GPU; each process trains on
    its slice of every global batch and DistributedDataParallel averages the gradients,
    which is the same update one process would make on the whole batch.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False

    @classmethod
    def from_env(cls) -> "Ranks":
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")),
                   int(env.get("LOCAL_WORLD_SIZE", str(world))))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        if self.world > 1 and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owns_group = True

    def stop(self) -> None:
        """Tear the group down, after whatever still holds it.

        The first DistributedDataParallel a process builds sits in a reference cycle, so without a
        collection here it outlives destroy_process_group and is freed during interpreter shutdown,
        with gloo's work objects. That aborted a rank now and then ("terminate called without an
        active exception", exit -6: once in about eight full test runs); pytorch/pytorch#179291
        describes the same crash in processes that never destroy the group.
        """
        if self.owns_group and dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()
            self.owns_group = False

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to train through: DistributedDataParallel under torchrun, else the model."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            # BatchNorm over the global batch, as one process computes it (SyncBatchNorm is
            # CUDA-only; on CPU each process normalizes by its own slice's statistics). The
            # conversion swaps the layers in place and keeps their parameters and buffers.
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def total(self, sums: torch.Tensor, seen: int) -> tuple[list[float], int]:
        """(summed values, images seen) over all processes; ``sums`` is a float64 vector."""
        if self.world == 1:
            return sums.detach().double().cpu().tolist(), seen
        both = torch.cat([sums.detach().double().flatten(),
                          torch.tensor([float(seen)], dtype=torch.float64, device=sums.device)])
        dist.all_reduce(both)
        return both[:-1].cpu().tolist(), int(both[-1].item())
