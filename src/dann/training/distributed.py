"""Several processes, one run: ``torchrun --nproc_per_node N -m dann train ...`` trains with DistributedDataParallel.

torchrun starts N copies of the command and tells each its place through the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``); ``World.from_env`` reads it, and a plain ``python -m dann train`` is a world of
one, for which everything here is a no-op. The rules:

- **Data.** ``train.batch_size`` is the *global* batch per domain; it must divide by N. Each step's batch is a pure
  function of (seed, step) (``dann.data.loaders``), and rank r takes rows ``[r·B/N, (r+1)·B/N)`` of it, with the
  augmentation the single-process run would give those rows (of a target batch of u·B rows under ``method.uratio``
  u, rows ``[r·uB/N, (r+1)·uB/N)``). This does what ``DistributedSampler`` + ``set_epoch``
  do (a fresh seeded permutation per pass over the data, disjoint shards per rank) and more: the ranks' shards
  together *are* the one-process batch, so N processes follow the one-process run (up to float summation order;
  BatchNorm, which normalizes each shard with its own statistics as usual under DDP, and dropout masks, drawn per
  process, make the runs differ), and a run can resume on a different N.
- **Gradients.** DDP wraps ``MethodLoss`` (the network plus the method's loss, ``steps``), so its hooks see
  the whole forward and average the gradients over the ranks during backward; with ``train.accumulate`` the
  reduction runs once per optimizer step (``no_sync`` on the other micro-batches). Every rank starts from the same
  weights (seeded, or loaded from the checkpoint) and so keeps the same parameters as the others. Each rank has its
  own RNG stream (the ``train`` seed of its rank, ``training.seeds``; rank 0's is the one-process stream), so dropout
  masks differ between shards; checkpoints keep every rank's RNG state, so a resume on the same N is exact.
- **Files.** Only rank 0 writes: run directory, ``metrics.jsonl``, checkpoints, TensorBoard, report, progress bar.
  Every rank reads the checkpoint on ``--resume``.
- **Evaluation.** Each rank scores a contiguous 1/N of every evaluated set; the outputs are gathered in order, so
  every rank computes the same metrics and validator scores. Before it, rank 0's buffers (BatchNorm statistics,
  which each process updates on its own shard) are broadcast, so the model evaluated is the model saved.
- **Agreement.** Each step's "loss is finite" flag is reduced over the ranks (an all-reduce on the device, no host
  sync), so all take the same ``train.on_nonfinite`` decision; logged loss terms are averaged over the ranks.

The backend is NCCL when the device is a GPU (process r uses ``cuda:LOCAL_RANK``) and gloo on CPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError, DannError

_STOPS = 0  # process groups left so far: each ``stop`` waits on its own store key


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DannError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run: ``rank`` in ``[0, size)``, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes in the environment, or a world of one."""
        world = cls(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
        if world.size < 1 or not 0 <= world.rank < world.size or world.local_rank < 0:
            raise DannError(f"inconsistent torchrun environment: RANK={world.rank}, WORLD_SIZE={world.size}")
        return world

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise ConfigError(
                f"train.batch_size={batch_size} must be divisible by the number of processes ({self.size}): it is "
                f"the global batch per domain, split evenly across processes (e.g. train.batch_size="
                f"{max(1, batch_size // self.size) * self.size})"
            )

    def rows(self, batch_size: int) -> tuple[int, int]:
        """This rank's rows ``[lo, hi)`` of a global training batch of ``batch_size`` (divisible by ``size``)."""
        share = batch_size // self.size
        return self.rank * share, (self.rank + 1) * share

    def chunk(self, n: int) -> tuple[int, int]:
        """This rank's contiguous part ``[lo, hi)`` of ``n`` evaluation samples (the last ranks may get fewer)."""
        share = -(-n // self.size)
        return min(n, self.rank * share), min(n, (self.rank + 1) * share)

    def start(self, device: torch.device) -> bool:
        """Join the process group (NCCL on GPUs, gloo otherwise) unless it is joined already or the world is one
        process. Returns whether this call joined it (and so should ``stop`` it)."""
        if self.active and device.type == "cuda":
            torch.cuda.set_device(device)  # collectives run on the current device, also in a group joined elsewhere
        if not self.active or dist.is_initialized():
            return False
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        if dist.get_world_size() != self.size:
            raise DannError(f"the process group has {dist.get_world_size()} processes but WORLD_SIZE={self.size}")
        return True

    def stop(self, wait: bool = True) -> None:
        """Leave the process group: with ``wait``, once every rank is here (after an error, at once: the others
        may be stuck in a collective, and torchrun stops them when this process exits). The wait goes through the
        rendezvous store, not gloo/NCCL: a rank that tears its connections down right after a gloo barrier can
        abort a peer whose last message is still in flight (gloo issue 155; seen once here as SIGABRT, "terminate
        called without an active exception", after a finished run). Past the store wait, every rank has returned
        from every collective."""
        if not dist.is_initialized():
            return
        if self.active and wait:
            global _STOPS
            _STOPS += 1
            store, key = dist.distributed_c10d._get_default_store(), f"dann/stop/{_STOPS}"
            if store.add(key, 1) == self.size:
                store.set(f"{key}/all", "1")
            store.wait([f"{key}/all"])
        dist.destroy_process_group()

    def wrap(self, module: nn.Module, device: torch.device, find_unused_parameters: bool) -> nn.Module:
        """``module`` in DistributedDataParallel when there are several processes; ``module`` itself otherwise."""
        if not self.active:
            return module
        ids = [device] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        """Where collectives run: the process's GPU with NCCL, the CPU with gloo."""
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def all_true(self, flag: torch.Tensor) -> torch.Tensor:
        """A 0-dim bool tensor: ``flag`` and the same flag on every other rank (an all-reduce; no host sync)."""
        if not self.active:
            return flag
        value = flag.to(self._comm_device(), torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return value.to(flag.device).bool()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (every rank passes the same keys)."""
        if not self.active or not values:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return dict(zip(values, (t / self.size).tolist(), strict=True))

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.active:
            return [obj]
        everyone: list[Any] = [None] * self.size
        dist.all_gather_object(everyone, obj)
        return everyone

    def union(self, names: list[str]) -> list[str]:
        """The sorted union of every rank's ``names`` (e.g. the unreadable files each process met)."""
        return sorted(set().union(*self.gather_objects(names)))

    def sync_buffers(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers. DDP does so at each step's forward, but each process then updates its
        BatchNorm statistics on its own shard: before evaluating and saving, all must hold the one saved model."""
        if self.active:
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's ``t`` (N_r, ...) concatenated in rank order (the N_r may differ), on ``t``'s device."""
        if not self.active:
            return t
        dev = self._comm_device()
        count = torch.tensor([len(t)], device=dev)
        counts = [torch.zeros_like(count) for _ in range(self.size)]
        dist.all_gather(counts, count)
        sizes = [int(c) for c in counts]
        padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=dev)
        padded[: len(t)] = t.to(dev)
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]).to(t.device)


def local_device(name: str, world: World) -> str:
    """``train.device`` for this process: under torchrun, ``auto`` and ``cuda`` become ``cuda:LOCAL_RANK`` (one GPU
    per process); naming one GPU (``cuda:N``) is refused, since every process would use it."""
    if not world.active:
        return name
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return f"cuda:{world.local_rank}"
    if name.startswith("cuda:"):
        raise ConfigError(
            f"train.device={name} under torchrun would put all {world.size} processes on one GPU; use "
            "train.device=cuda (or auto): process r then uses cuda:LOCAL_RANK"
        )
    if name == "mps":
        raise ConfigError("train.device=mps cannot train with several processes (no distributed backend for it)")
    return name
