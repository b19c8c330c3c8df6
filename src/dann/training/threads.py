"""How many torch threads a CPU run uses (``train.threads``): a number, or ``auto``, resolved once when the run starts
and recorded in its config.yaml, so a resume keeps the thread count, and with it the run's floating-point sums.

``auto`` follows what ``benchmarks/threads.py`` measured on a shared 2-core CPU (docs/speed.md): the registered
small backbones (``lenet``, ``mlp``: a few MFLOP a step) train fastest on one thread, quiet or busy, because their
ops are too small to gain from a second thread and a busy machine makes threads wait for each other (2 threads
were 3-7× slower than one with other jobs running); larger backbones get the cores that other work leaves free
(the cores minus the 1-minute load average, at least one). Under torchrun the cores are shared among the processes
of the machine. A GPU run keeps torch's own setting (its CPU threads only prepare batches)."""

from __future__ import annotations

import os
from dataclasses import dataclass

AUTO = "auto"
SMALL_BACKBONES = ("lenet", "lenet_conv", "mlp")  # models.backbones' registered networks


@dataclass(frozen=True)
class Threads:
    """A resolved thread count and, for ``auto``, what it was chosen from (for the start-up summary)."""

    count: int
    why: str = ""  # "auto: small backbone", "auto: machine busy, load 3.9 on 2 cores", "" when given


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def machine_load() -> float | None:
    """The 1-minute load average (runnable processes), or None where the platform has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def auto_threads(backbone: str, cores: int, load: float | None, processes: int = 1) -> Threads:
    """``train.threads: auto`` for ``backbone`` on ``cores`` usable CPUs with the given 1-minute ``load``, shared by
    ``processes`` training processes on the machine."""
    per_process = max(1, cores // max(1, processes))
    busy = load is not None and load > cores - 0.5
    state = f"load {load:.1f} on {cores} cores" if load is not None else f"{cores} cores"
    if backbone in SMALL_BACKBONES:
        return Threads(1, f"auto: small backbone{', machine busy' if busy else ''}; {state}")
    free = per_process if load is None else max(1, min(per_process, int(cores - load + 0.5) // max(1, processes)))
    return Threads(free, f"auto: {'machine busy, ' if busy else ''}{state}")


def resolve_threads(setting: int | str, backbone: str, device_type: str, processes: int = 1) -> Threads:
    """The thread count of a run: ``setting`` when it is a number; for ``auto``, ``auto_threads`` on a CPU device
    and torch's current setting on any other."""
    if setting != AUTO:
        return Threads(int(setting))
    if device_type != "cpu":
        import torch

        return Threads(torch.get_num_threads(), "auto: torch's setting (the model runs on the accelerator)")
    return auto_threads(backbone, usable_cores(), machine_load(), processes)
