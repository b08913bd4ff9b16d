"""torchrun support: the same entry point trains on one process or many (DDP)."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def wants_cuda(device_request: str) -> bool:
    """`cuda`, or `auto` on a machine with a CUDA device."""
    return device_request == "cuda" or (device_request == "auto" and torch.cuda.is_available())


def init_world(device_request: str) -> tuple[World, torch.device]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU), pick the device."""
    cuda = wants_cuda(device_request)
    if "RANK" not in os.environ:
        return World(), torch.device("cuda" if cuda else "cpu")
    world = World(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        size=int(os.environ["WORLD_SIZE"]),
    )
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(world.local_rank)
        return world, torch.device("cuda", world.local_rank)
    return world, torch.device("cpu")


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def no_sync_unless(last: bool, model: nn.Module) -> AbstractContextManager:
    """Skip DDP's gradient all-reduce on every micro-step but the last."""
    if last or not hasattr(model, "no_sync"):
        return nullcontext()
    return model.no_sync()


def sum_across(values: torch.Tensor, world: World, device: torch.device) -> torch.Tensor:
    """Element-wise sum over all processes (a copy on the CPU), for every rank."""
    if not world.distributed:
        return values
    tensor = values.to(device)
    dist.all_reduce(tensor)
    return tensor.cpu()


def means_across(values: list[float], world: World, device: torch.device) -> list[float]:
    """The mean over processes of each value, identical on every rank (a plan made of them
    is the same everywhere)."""
    total = sum_across(torch.tensor(values, dtype=torch.float64), world, device)
    return (total / world.size).tolist()


def mean_across(value: float, world: World, device: torch.device) -> float:
    return means_across([value], world, device)[0]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
