"""``train.threads``: auto picks one thread for the small backbones and the free cores for the others, says so when the
machine is busy, is recorded in config.yaml (a resume keeps it) and is what the run trains with; the caller's
thread count is put back afterwards."""

import pytest
import torch
import yaml

import dann
from dann.api import saved_run_config
from dann.config import resume_config
from dann.errors import ConfigError
from dann.training import threads as threads_module
from dann.training.threads import auto_threads, resolve_threads

from .conftest import blobs


@pytest.mark.parametrize(
    ("backbone", "cores", "load", "processes", "count", "busy"),
    [
        ("lenet", 2, 0.1, 1, 1, False),  # small: one thread even on a quiet machine
        ("mlp", 2, 3.9, 1, 1, True),
        ("lenet_conv", 16, 0.0, 1, 1, False),
        ("resnet18", 2, 0.1, 1, 2, False),  # larger: the free cores
        ("resnet18", 2, 1.2, 1, 1, False),  # one core taken by other work: the other one
        ("resnet18", 2, 3.9, 1, 1, True),
        ("resnet50", 16, 4.2, 1, 12, False),
        ("resnet50", 16, 0.0, 4, 4, False),  # torchrun: the cores shared among the processes
        ("resnet50", 8, None, 1, 8, False),  # no load average (Windows): every core
    ],
)
def test_auto_threads(backbone, cores, load, processes, count, busy):
    chosen = auto_threads(backbone, cores, load, processes)
    assert chosen.count == count
    assert chosen.why.startswith("auto: ")
    assert ("busy" in chosen.why) == busy
    if load is not None:
        assert f"load {load:.1f} on {cores} cores" in chosen.why


def test_a_given_count_is_kept_and_an_accelerator_keeps_torchs_setting():
    assert resolve_threads(3, "lenet", "cpu").count == 3 and resolve_threads(3, "lenet", "cpu").why == ""
    assert resolve_threads("auto", "resnet50", "cuda").count == torch.get_num_threads()


@pytest.mark.parametrize("bad", [-1, "two", 1.5])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ConfigError, match=r"train\.threads"):
        dann.load_config(None, [f"train.threads={bad}"])


@pytest.fixture
def npz(tmp_path):
    import numpy as np

    x_s, y_s = blobs(40, 0.0, 0)
    x_t, _ = blobs(30, 1.5, 1)
    np.savez(tmp_path / "s.npz", x=x_s, y=y_s)
    np.savez(tmp_path / "t.npz", x=x_t)
    return tmp_path


def _cfg(npz, *extra):
    sets = [f"data.source={npz / 's.npz'}", f"data.target={npz / 't.npz'}", "model.backbone=mlp", "train.steps=4"]
    return dann.load_config(None, [*sets, "method.name=dann", "train.progress=false", *extra])


def test_the_run_records_and_trains_with_the_choice_then_puts_the_callers_back(npz, monkeypatch):
    monkeypatch.setattr(threads_module, "machine_load", lambda sample: 3.7)
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    seen, lines = [], []
    set_threads = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), set_threads(n)))
    before = torch.get_num_threads()
    result = dann.fit(_cfg(npz), npz / "run", echo=lines.append)
    saved = yaml.safe_load((npz / "run" / "config.yaml").read_text())
    assert saved["train"]["threads"] == 1 and result.config.train.threads == 1
    assert seen[0] == 1 and torch.get_num_threads() == before  # trained on 1, the caller's count put back
    assert any(
        line.startswith("threads:  1 (auto: small backbone, machine busy; load 3.7 on 2 cores") for line in lines
    )

    recorded = saved_run_config(npz / "run")
    assert resume_config(recorded, _cfg(npz), "run").train.threads == 1  # auto on resume: what the run recorded
    assert resume_config(recorded, _cfg(npz, "train.threads=2"), "run").train.threads == 2  # e.g. another machine


def test_a_given_count_is_used_and_recorded_without_a_line(npz, monkeypatch):
    seen, lines = [], []
    set_threads = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), set_threads(n)))
    result = dann.fit(_cfg(npz, "train.threads=2"), npz / "run", echo=lines.append)
    assert result.config.train.threads == 2 and seen[0] == 2
    assert not any(line.startswith("threads:") for line in lines)


@pytest.mark.parametrize(
    ("busy", "own", "others"),
    [(200, 0, 2.0), (200, 100, 1.0), (100, 100, 0.0), (50, 0, 0.5), (0, 0, 0.0)],
)
def test_other_work_is_the_machines_busy_time_less_this_processs_own(busy, own, others, monkeypatch):
    """Over the sample, the machine's 2 CPUs have 200 ticks in all: ``busy`` of them busy, ``own`` by this process."""
    machine = iter([(1000, 5000), (1000 + busy, 5200)])
    mine = iter([40, 40 + own])
    monkeypatch.setattr(threads_module, "_cpu_ticks", lambda: next(machine))
    monkeypatch.setattr(threads_module, "_own_ticks", lambda: next(mine))
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "SAMPLE_SECONDS", 0.0)
    assert threads_module.machine_load() == pytest.approx(others)


def test_the_load_average_serves_where_there_is_no_proc_stat(monkeypatch):
    monkeypatch.setattr(threads_module, "_cpu_ticks", lambda: None)
    monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (1.25, 1.0, 1.0))
    assert threads_module.machine_load() == 1.25 and threads_module.machine_load(sample=False) == 1.25


def test_zero_keeps_torchs_own_setting_as_runs_before_train_threads_did(npz, monkeypatch):
    assert resolve_threads(0, "lenet", "cpu").count == torch.get_num_threads()
    result = dann.fit(_cfg(npz), npz / "old")
    path = npz / "old" / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    del saved["train"]["threads"]  # a run written before train.threads existed
    path.write_text(yaml.safe_dump(saved))
    assert saved_run_config(npz / "old").train.threads == 0  # its resume keeps torch's setting, as it trained
    assert result.config.train.threads == 1
