"""How many torch threads a CPU run uses (``train.threads``): a number, or ``auto``, resolved once when the run starts
and recorded in its config.yaml, so a resume keeps the thread count, and with it the run's floating-point sums.

``auto`` follows what ``benchmarks/threads.py`` measured on a shared 2-core CPU (docs/speed.md): the registered
small backbones (``lenet``, ``mlp``: a few MFLOP a step) train fastest on one thread, quiet or busy, because their
ops are too small to gain from a second thread and a busy machine makes threads wait for each other (2 threads
were 3-7× slower than one with other jobs running, and no faster on a quiet machine); larger backbones get the
cores that other work leaves free (at least one; a ResNet-18 gained 1.5× from a second thread on the quiet machine).
Other work is measured over ``SAMPLE_SECONDS`` as the run starts, not by the load average, which lags by a
minute. Under torchrun the cores are shared among the processes of the machine. A GPU run keeps torch's own
setting (its CPU threads only prepare batches)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

AUTO = "auto"
SMALL_BACKBONES = ("lenet", "lenet_conv", "mlp")  # models.backbones' registered networks


@dataclass(frozen=True)
class Threads:
    """A resolved thread count and, for ``auto``, what it was chosen from (for the start-up summary)."""

    count: int
    why: str = ""  # "auto: small backbone", "auto: machine busy, load 3.9 on 2 cores", "" when given


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a container's CPU quota (``usable_cpus``)."""
    from ..data.images import usable_cpus

    return usable_cpus()


SAMPLE_SECONDS = 0.3  # how long other processes' CPU use is watched before a run picks its threads


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat (Linux), or None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _own_ticks() -> int:
    """CPU ticks this process (all its threads) has used: user + system, from /proc/self/stat."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_load(sample: bool = True) -> float | None:
    """How many of this process's usable cores other processes keep busy: with ``sample`` on Linux, their CPU use
    over ``SAMPLE_SECONDS`` read from /proc/stat, less this process's own (the machine's busy share times the usable
    cores); otherwise the 1-minute load average; None where neither exists (Windows). The load average lags by a
    minute and counts this process's own start-up, which makes a quiet machine look busy right after other work."""
    before = _cpu_ticks() if sample else None
    if before is not None:
        own = _own_ticks()
        time.sleep(SAMPLE_SECONDS)
        after = _cpu_ticks()
        if after is not None and after[1] > before[1]:
            others = (after[0] - before[0]) - (_own_ticks() - own)  # ticks of CPU time, all CPUs together
            return max(0.0, others / (after[1] - before[1]) * usable_cores())
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def auto_threads(backbone: str, cores: int, load: float | None, processes: int = 1) -> Threads:
    """``train.threads: auto`` for ``backbone`` on ``cores`` usable CPUs under ``load`` (``machine_load``: the cores
    other work keeps busy), shared by ``processes`` training processes on the machine."""
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
    if setting == 0:  # torch's own setting (what runs used before train.threads)
        import torch

        return Threads(torch.get_num_threads())
    if setting != AUTO:
        return Threads(int(setting))
    if device_type != "cpu":
        import torch

        return Threads(torch.get_num_threads(), "auto: torch's setting (the model runs on the accelerator)")
    # the small backbones take one thread whatever the load: the cheap load average serves the start-up line
    return auto_threads(backbone, usable_cores(), machine_load(sample=backbone not in SMALL_BACKBONES), processes)
