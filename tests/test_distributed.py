"""Several processes (torchrun, gloo on the CPU) train the weights one process trains with the same global batch.

The launches run the real command, ``torchrun --standalone --nproc_per_node 2 -m dann train ...``, each process
with one CPU thread; the one-process references run in this process (also one thread, see conftest)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dann
from dann.cli import main
from dann.config import load_config, replace
from dann.data import Domain
from dann.data.loaders import LoaderBatches, StepBatches
from dann.errors import ConfigError, DannError, DataWarning
from dann.evaluation.metrics import embed, evaluate_domain
from dann.plan import build_run_data, create_network
from dann.runs import LAST_CHECKPOINT, METRICS_FILE, PREV_CHECKPOINT, load_checkpoint, read_jsonl
from dann.selection.validators import evaluate_validators
from dann.training.distributed import World, local_device
from dann.training.trainer import batch_streams

from .test_folders import TIMM, folder_cfg
from .test_kill_resume import ENV  # one CPU thread per process, this checkout's dann on the path

# the paper's digit network on the embedded digits task, with images, shift augmentation and 2 micro-batches per
# step (so DDP's no_sync path runs); batch_size is the global batch per domain: 8 rows per process and micro-batch
DIGITS = [
    *("--config", "digits", "--method", "source_only", "--steps", "20", "--quiet", "--device", "cpu", "--no-report"),
    *("--set", "train.eval_every=10", "--set", "train.batch_size=16", "--set", "train.accumulate=2"),
    *("--set", "train.precision=fp32"),  # compared to 1e-4: bfloat16 (auto on some CPUs) rounds more than that
]


# gloo can abort a rank while the processes tear their connections down at exit (gloo issue 155;
# dann.training.distributed.World.stop waits for every rank first, which makes it rare, not impossible)
TEARDOWN_ABORT = "terminate called without an active exception"


def finished_run(args: tuple[str, ...]) -> bool:
    """Whether the run ``--out`` names holds every evaluation its config.yaml plans (written before any exit)."""
    out = Path(args[args.index("--out") + 1]) if "--out" in args else None
    if out is None or not (out / "config.yaml").is_file() or not (out / METRICS_FILE).is_file():
        return False
    history = read_jsonl(out / METRICS_FILE)
    return bool(history) and history[-1]["step"] == load_config(str(out / "config.yaml")).train.steps


def torchrun(*args: str, processes: int = 2, ok: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "dann", "train", *args]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    if not ok:
        return done
    if done.returncode != 0 and TEARDOWN_ABORT in done.stderr and finished_run(args):
        return done  # the run finished and wrote everything; gloo's teardown aborted, not dann: what follows checks it
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Exception ignored" not in done.stderr, done.stderr[-3000:]  # e.g. from DataLoader workers at exit
    return done


def model_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / LAST_CHECKPOINT).model


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def stable(record: dict) -> dict:
    """A metrics record without what differs between launches (speed, process count)."""
    return {k: v for k, v in record.items() if k not in ("steps_per_s", "processes")}


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    done = torchrun(*DIGITS, "--out", str(out))
    return out, done


def test_two_processes_train_the_weights_of_one_process_with_the_same_global_batch(two_process_run, tmp_path):
    ddp, done = two_process_run
    assert main(["train", *DIGITS, "--out", str(tmp_path / "one")]) == 0
    one = tmp_path / "one"
    assert_close(model_weights(ddp), model_weights(one))
    assert (ddp / "config.yaml").read_text() == (one / "config.yaml").read_text()
    # rank 0 alone writes and prints: one metrics line per evaluation, one summary
    a, b = read_jsonl(ddp / METRICS_FILE), read_jsonl(one / METRICS_FILE)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [10, 20]
    assert all(r["processes"] == 2 for r in a) and all("processes" not in r for r in b)
    assert done.stdout.count("run: ") == 1 and "target accuracy" in done.stdout
    # evaluation gathered over the two processes scores the same samples as one process does
    for ra, rb in zip(a, b, strict=True):
        assert ra["oracle"]["target_acc"] == pytest.approx(rb["oracle"]["target_acc"], abs=2e-3)
        assert ra["source_val"]["acc"] == pytest.approx(rb["source_val"]["acc"], abs=2e-3)
        assert ra["validators"] == pytest.approx(rb["validators"], rel=1e-3, abs=1e-4)
        assert ra["train"] == pytest.approx(rb["train"], rel=1e-3, abs=1e-4)  # averaged over the processes


def resume_from_step_10(run: Path, copy: Path) -> Path:
    """A copy of ``run`` as it was after its first checkpoint, as if it had died there."""
    shutil.copytree(run, copy)
    shutil.move(copy / PREV_CHECKPOINT, copy / LAST_CHECKPOINT)
    assert load_checkpoint(copy / LAST_CHECKPOINT).step == 10
    return copy


def test_one_process_can_continue_a_two_process_run(two_process_run, tmp_path):
    ddp, _ = two_process_run
    single = resume_from_step_10(ddp, tmp_path / "one")
    assert main(["train", "--resume", "--out", str(single)]) == 0
    assert_close(model_weights(single), model_weights(ddp))


def test_batchnorm_and_dropout_under_two_processes_evaluate_what_is_saved_and_resume_exactly(tmp_path):
    """Here N processes cannot match one (each normalizes its own shard, and draws its own dropout masks); what
    must hold: the metrics are those of the saved model, and a resume is exact."""
    args = [
        *("--config", "moons", "--method", "source_only", "--steps", "20", "--quiet", "--device", "cpu", "--no-report"),
        *("--set", "train.eval_every=10", "--set", "train.batch_size=32"),
        *("--set", "model.batchnorm=true", "--set", "model.dropout=0.3"),
    ]
    run = tmp_path / "two"
    torchrun(*args, "--out", str(run))
    state = load_checkpoint(run / LAST_CHECKPOINT)
    rng = state.rng_ranks  # each process has its own RNG stream, and the checkpoint keeps all of them
    assert len(rng) == 2 and not torch.equal(rng[0]["cpu"], rng[1]["cpu"])
    # the recorded metrics are those of last.pt scored in one process (rank 0's BatchNorm statistics everywhere)
    cfg = load_config(str(run / "config.yaml"))
    data = build_run_data(cfg.data, cfg.model)
    net = create_network(cfg.model, data.input_shape, data.num_classes)
    net.load_state_dict(state.model)
    last = read_jsonl(run / METRICS_FILE)[-1]
    scores = evaluate_validators(net, data, cfg.selection.max_samples, cfg.train.eval_batch_size)
    assert last["validators"] == pytest.approx(scores, rel=1e-5, abs=1e-6)
    accuracy = evaluate_domain(net, data.target_eval, data.num_classes)["acc"]
    assert last["oracle"]["target_acc"] == pytest.approx(accuracy, abs=1e-9)
    # resumed from its first checkpoint by two processes: the same weights, statistics and metrics, bit for bit
    resumed = resume_from_step_10(run, tmp_path / "resumed")
    torchrun("--resume", "--out", str(resumed))
    for k, v in model_weights(run).items():
        assert torch.equal(v, model_weights(resumed)[k]), k  # gloo sums two numbers in a fixed order
    records = [stable(r) for r in read_jsonl(resumed / METRICS_FILE)]
    assert records == [stable(r) for r in read_jsonl(run / METRICS_FILE)]


MOONS = [
    *("--config", "moons", "--steps", "12", "--quiet", "--device", "cpu"),
    *("--no-report", "--set", "train.eval_every=6", "--set", "train.batch_size=32", "--set", "train.precision=fp32"),
]


@pytest.mark.parametrize("method", ["source_only", "cdan"])
def test_methods_with_per_sample_losses_train_the_one_process_weights(method, tmp_path):
    """Source-only never runs the discriminator (DDP must accept parameters without gradients); CDAN's
    discriminator reads features and predictions. Both losses are means over samples, so 2 processes equal 1 on the
    seed's network (cdan's auto BatchNorm bottleneck would normalise each process's shard by its own statistics)."""
    seed = ["--method", method, "--set", "model.bottleneck_dim=0"]
    torchrun(*MOONS, *seed, "--out", str(tmp_path / "two"))
    assert main(["train", *MOONS, *seed, "--out", str(tmp_path / "one")]) == 0
    assert_close(model_weights(tmp_path / "two"), model_weights(tmp_path / "one"))


def test_batch_level_and_source_free_methods_run_under_two_processes(tmp_path):
    """MCC's confusion matrix is a statistic of each process's shard (like BatchNorm's), so only its running is
    checked; shot reads no source batch, leaves its classifier and the discriminator without gradients, and every
    process clusters the whole target set (rank 0's centres kept)."""
    layout = ["--set", "model.bottleneck_dim=256"]  # shot's reference network
    assert main(["train", *MOONS, *layout, "--method", "source_only", "--out", str(tmp_path / "source")]) == 0
    torchrun(*MOONS, "--method", "dann", "--set", "method.regularizers={mcc: 1.0}", "--out", str(tmp_path / "mcc"))
    torchrun(*MOONS, "--method", "shot", "--init-from", str(tmp_path / "source"), "--out", str(tmp_path / "shot"))
    for run in ("mcc", "shot"):
        assert all(torch.isfinite(v).all() for v in model_weights(tmp_path / run).values() if v.is_floating_point())
    assert load_checkpoint(tmp_path / "shot" / LAST_CHECKPOINT).method["shot"]["centres"].shape == (2, 257)


class ThisRankOnly(World):
    """A rank of a world whose other ranks are absent: gathering returns this rank's part alone."""

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t


@pytest.mark.parametrize("ratio", [1, 3])
def test_training_streams_and_evaluation_are_split_between_the_processes(tiny_cfg, tiny_data, ratio):
    """``ratio``: target rows per source row (method.uratio), split between the processes like the source's."""
    cfg, cpu = replace(tiny_cfg, train={"batch_size": 8}), torch.device("cpu")
    one = batch_streams(cfg, tiny_data, True, 3, cpu, World().rows(cfg.train.batch_size), ratio=ratio)
    parts = [
        batch_streams(cfg, tiny_data, True, 3, cpu, World(r, 2).rows(cfg.train.batch_size), ratio=ratio) for r in (0, 1)
    ]
    for step in (3, 4):
        for domain in (0, 1):
            x, y = one[domain].get(step)
            halves = [p[domain].get(step) for p in parts]
            assert [len(h[0]) for h in halves] == [4 * (ratio if domain else 1)] * 2
            assert torch.equal(torch.cat([h[0] for h in halves]), x)
            if domain == 0:
                assert torch.equal(torch.cat([h[1] for h in halves]), y)
    net = dann.fit(cfg, data=tiny_data).net
    target = tiny_data.target_eval  # 60 samples: rank 1 of 2 scores samples 30..59
    _, logits, index = embed(net, target, 16, world=ThisRankOnly(1, 2))
    assert torch.equal(index, torch.arange(30, 60))
    torch.testing.assert_close(logits, embed(net, target, 16)[1][30:])


@pytest.mark.parametrize("balanced", [False, True])
def test_the_processes_rows_make_up_the_one_process_batch(balanced):
    x = torch.rand(50, 1, 6, 6)
    domain = Domain(x, torch.arange(50) % 3)
    cpu = torch.device("cpu")
    full = StepBatches(domain, 12, 7, cpu, augment=True, balanced=balanced)
    for size in (2, 3, 4):
        shards = [
            StepBatches(domain, 12, 7, cpu, augment=True, balanced=balanced, rows=World(r, size).rows(12))
            for r in range(size)
        ]
        for step in (0, 4, 9):  # 9: the batch straddles two passes over the data
            xs, ys = zip(*(s.get(step) for s in shards), strict=True)
            x_full, y_full = full.get(step)
            assert torch.equal(torch.cat(xs), x_full) and torch.equal(torch.cat(ys), y_full)


def test_image_file_shards_make_up_the_one_process_batch(shape_folders):
    domain = build_run_data(folder_cfg(shape_folders, color_jitter=0.4), TIMM).source_train
    cpu = torch.device("cpu")
    full = LoaderBatches(domain, 6, 3, cpu, start=2, augment=True)
    shards = [LoaderBatches(domain, 6, 3, cpu, start=2, augment=True, rows=World(r, 2).rows(6)) for r in (0, 1)]
    for step in (2, 3):
        xs, ys = zip(*(s.get(step) for s in shards), strict=True)
        x_full, y_full = full.get(step)
        assert torch.equal(torch.cat(xs), x_full) and torch.equal(torch.cat(ys), y_full)  # augmentation included


def test_world_from_the_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert World.from_env() == World(0, 1, 0) and not World.from_env().active
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = World.from_env()
    assert world == World(3, 4, 1) and world.active and not world.main
    assert world.rows(32) == (24, 32) and world.chunk(10) == (9, 10) and World(3, 4).chunk(2) == (2, 2)
    assert local_device("cuda", world) == "cuda:1" and local_device("cpu", world) == "cpu"
    with pytest.raises(ConfigError, match=r"train\.device=cuda:0 under torchrun"):
        local_device("cuda:0", world)
    with pytest.raises(ConfigError, match=r"train.batch_size=30 must be divisible by the number of processes \(4\)"):
        world.check_batch_size(30)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(DannError, match="WORLD_SIZE='two' is not an integer"):
        World.from_env()


def test_an_indivisible_batch_is_refused_before_the_run_directory_is_made(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    args = ["train", "--config", "moons", "--steps", "2", "--quiet", "--device", "cpu", "--out", str(tmp_path / "r")]
    assert main([*args, "--set", "train.batch_size=32"]) == 2
    assert "train.batch_size=32 must be divisible by the number of processes (3)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_image_folders_with_workers_and_an_unreadable_file_under_two_processes(shape_folders, tmp_path):
    target = tmp_path / "target"
    shutil.copytree(shape_folders["target"], target)
    bad = next((target / "circle").glob("*.jpg"))
    bad.write_bytes(b"\xff\xd8\xff broken")
    args = [
        *("--source", str(shape_folders["source"]), "--target", str(target)),
        *("--backbone", "test_resnet", "--method", "source_only", "--steps", "6", "--quiet", "--device", "cpu"),
        "--no-report",
        *("--set", "data.image_size=32", "--set", "data.num_workers=1", "--set", "train.batch_size=8"),
        *("--set", "train.eval_every=3"),
    ]
    # without skip_bad_images the process that meets the file stops with its name, and the launch ends (no hang)
    failed = torchrun(*args, "--out", str(tmp_path / "stopped"), ok=False)
    assert failed.returncode != 0 and f"{bad}: cannot read this image file" in failed.stderr
    run = tmp_path / "run"
    torchrun(*args, "--out", str(run), "--set", "data.skip_bad_images=true")
    last = read_jsonl(run / METRICS_FILE)[-1]
    assert last["skipped_images"] == {"count": 1, "first": [str(bad)]}  # whichever process met it
    # the gathered target accuracy is that of last.pt scored by one process (a BatchNorm network)
    with pytest.warns(DataWarning, match="skipped 1 unreadable image file"):
        metrics = dann.evaluate(run, str(target), tmp_path / "eval", skip_bad=True)
    assert metrics["n"] == 17 and metrics["acc"] == pytest.approx(last["oracle"]["target_acc"], abs=1e-9)


def test_two_processes_read_one_shared_cache_and_train_the_one_process_weights(shape_folders, tmp_path):
    """With ``data.cache=on`` under torchrun the processes take turns on the build lock, so one builds each domain's
    cache and the other reads it; every process then samples its shard of the step's batch from the shared memmap,
    and the weights are those one process trains from the same cache."""
    args = [
        *("--source", str(shape_folders["source"]), "--target", str(shape_folders["target"])),
        *(
            "--backbone",
            "lenet",
            "--method",
            "source_only",
            "--steps",
            "4",
            "--quiet",
            "--device",
            "cpu",
            "--no-report",
        ),
        *("--set", "data.image_size=16", "--set", "data.num_workers=0", "--set", "train.batch_size=8"),
        *("--set", "train.eval_every=2", "--set", "train.precision=fp32", "--set", "data.cache=on"),
        *("--set", f"data.cache_dir={tmp_path / 'cache'}"),
    ]
    torchrun(*args, "--out", str(tmp_path / "two"))
    built = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len([n for n in built if n.endswith(".npy")]) == 2, built  # source and target, each once
    assert not [n for n in built if ".tmp" in n or "partial" in n], built  # no half-built file left behind
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.npy")}
    assert main(["train", *args, "--out", str(tmp_path / "one")]) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.npy")} == stamps  # read, not rebuilt
    assert_close(model_weights(tmp_path / "two"), model_weights(tmp_path / "one"))
