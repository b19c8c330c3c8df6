"""Feature passes whose memory is bounded by the batch, not by the data: ``predict`` and ``evaluate`` keep no features
(their peak resident memory, measured in a fresh process, is flat in the number of samples), stream their outputs,
and give the values of the plain whole-set computation; the report's diagnostics read a bounded, seeded sample."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import dann
from dann.config import load_config
from dann.evaluation import metrics
from dann.evaluation.loading import load_run
from dann.evaluation.metrics import classification_metrics, confusion_counts, evaluate_domain
from dann.plan import build_run_data
from dann.reporting import report
from dann.runs import atomic_writer
from dann.training.distributed import World

from .conftest import blobs

WIDTH = 4096  # features per sample: 16 KiB, so that keeping them shows at a few thousand samples
SIZES = (1000, 4000, 16000)  # keeping features would add 16 KiB × 15,000 ≈ 234 MiB from the first to the last
FLAT_MIB = 16.0  # the allowed spread of the peak across SIZES: the features of ~1,000 samples

# A fresh process: the resident memory after loading the run, then its high-water mark after predict, and again
# (the mark reset through /proc/self/clear_refs) after evaluate. /proc/self/status and clear_refs: Linux.
CHILD = """
import json, sys
from pathlib import Path
import torch
import dann
from dann.evaluation.loading import load_run

def mib(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024

torch.set_num_threads(1)
run, data, out = sys.argv[1:]
load_run(run)
grown = {}
for what in ("predict", "evaluate"):
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from the current RSS
    before = mib("VmRSS")
    dann.predict(run, data, out) if what == "predict" else dann.evaluate(run, data)
    grown[what] = mib("VmHWM") - before
print(json.dumps(grown))
"""


def save_blobs(path, n, shift, seed):
    x, y = blobs(n, shift, seed)
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """A run of the `mlp` backbone with 4096-wide features (no bottleneck), a few source-only steps on .npz files."""
    root = tmp_path_factory.mktemp("wide")
    source, target = save_blobs(root / "s.npz", 200, 0.0, 0), save_blobs(root / "t.npz", 200, 1.5, 1)
    cfg = load_config(
        values={
            "data": {"source": str(source), "target": str(target)},
            "model": {"backbone": "mlp", "mlp_dims": [WIDTH], "bottleneck_dim": 0, "discriminator_dims": [8]},
            "method": {"name": "source_only"},
            "train": {"steps": 4, "eval_every": 4, "batch_size": 16, "progress": False, "device": "cpu"},
        }
    )
    dann.fit(cfg, root / "run")
    return root / "run"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_peak_memory_of_predict_and_evaluate_is_flat_in_the_number_of_samples(wide_run, tmp_path):
    # a fixed mmap threshold: glibc returns every freed large block at once, so the peak is what the pass holds, not
    # the allocator's dynamic threshold settling over the first batches
    env = os.environ | {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    grown = {}
    for n in SIZES:
        data = save_blobs(tmp_path / f"d{n}.npz", n, 1.5, n)
        argv = [sys.executable, "-c", CHILD, str(wide_run), str(data), str(tmp_path / f"p{n}.csv")]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        grown[n] = json.loads(done.stdout.splitlines()[-1])
    for what in ("predict", "evaluate"):
        peaks = [grown[n][what] for n in SIZES]
        assert max(peaks) - min(peaks) < FLAT_MIB, f"{what}: peak MiB above the loaded run, per N {SIZES}: {peaks}"


def test_predict_and_evaluate_give_the_values_of_the_whole_set_computation(wide_run, tmp_path):
    data = save_blobs(tmp_path / "d.npz", 1300, 1.5, 7)  # three batches of 512, the last one partial
    arrays = np.load(data)
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    net = load_run(wide_run).net.eval()
    with torch.no_grad():
        logits = net(x)
    conf, pred = torch.softmax(logits, 1).max(1)
    out = dann.predict(wide_run, data, tmp_path / "p.csv")
    rows = list(csv.reader(out.open()))
    expected = [[str(i), str(int(p)), f"{c:.6f}"] for i, (p, c) in enumerate(zip(pred, conf.tolist(), strict=True))]
    assert rows == [["index", "predicted_class", "confidence"], *expected]
    got = dann.evaluate(wide_run, data)
    whole = classification_metrics(y, logits.argmax(1), 2)
    assert {k: got[k] for k in whole} == whole and got["n"] == 1300


def test_a_predict_that_fails_midway_leaves_no_file(wide_run, tmp_path, monkeypatch):
    data = save_blobs(tmp_path / "d.npz", 1300, 1.5, 7)
    stream = metrics.predictions_by_batch

    def fail_after_one_batch(*args, **kwargs):
        yield next(stream(*args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(dann.api, "predictions_by_batch", fail_after_one_batch)
    (tmp_path / "p.csv").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        dann.predict(wide_run, data, tmp_path / "p.csv", overwrite=True)
    assert (tmp_path / "p.csv").read_text() == "mine"  # the old file as it was, no temporary file beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "p.csv"]


def test_atomic_writer_renames_only_a_complete_file(tmp_path):
    path = tmp_path / "a.csv"
    with atomic_writer(path) as write:
        write("a,b\r\n")
        assert not path.exists() and len(list(tmp_path.iterdir())) == 1  # the temporary file alone
        write("é\r\n")
    assert path.read_bytes() == "a,b\r\né\r\n".encode() and list(tmp_path.iterdir()) == [path]


def test_evaluation_counts_batch_by_batch_and_each_process_its_part(tiny_cfg, tiny_data):
    net = dann.fit(tiny_cfg, data=tiny_data).net
    target = tiny_data.target_eval  # 60 samples
    with torch.no_grad():
        pred = net.eval()(target.x).argmax(1)
    counts = confusion_counts(net, target, batch_size=7)
    assert torch.equal(counts, metrics.confusion_matrix(target.y, pred, 2))
    assert evaluate_domain(net, target, 2, batch_size=7) == classification_metrics(target.y, pred, 2)

    class ThisRankOnly(World):  # rank 1 of 2, the other absent: gathering returns this rank's part alone
        def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
            return t

    part = confusion_counts(net, target, batch_size=7, world=ThisRankOnly(1, 2))
    assert torch.equal(part, metrics.confusion_matrix(target.y[30:], pred[30:], 2))


def test_the_classifier_predicts_without_keeping_features(monkeypatch):
    x_s, y_s = blobs(40, 0.0, 0)
    x_t, y_t = blobs(30, 1.5, 1)
    options = {"backbone": "mlp", "method": "source_only", "max_steps": 2, "batch_size": 16, "device": "cpu"}
    model = dann.DANNClassifier(**options, config={"model.mlp_dims": [8]}).fit(x_s, y_s, X_target=x_t)
    asked = []
    outputs = metrics._batch_outputs

    def spy(net, batches, device, features=False):
        asked.append(features)
        return outputs(net, batches, device, features)

    monkeypatch.setattr(metrics, "_batch_outputs", spy)
    model.predict(x_t)
    model.predict_proba(x_t)
    model.decision_function(x_t)
    assert model.score(x_t, y_t) >= 0 and asked == [False] * 4
    assert model.transform(x_t).shape == (30, 8) and asked[-1] is True  # features only where they are the output


def test_the_report_diagnostics_read_a_bounded_seeded_sample_and_say_so(wide_run, monkeypatch):
    run = report.summarize(wide_run)
    data = build_run_data(run.config.data, run.config.model)  # 200 training samples per domain, less the held-out ones
    embedded = []
    embed = report.embed

    def spy(net, domain, *args, **kwargs):
        embedded.append(len(domain))
        return embed(net, domain, *args, **kwargs)

    monkeypatch.setattr(report, "embed", spy)
    lines = []
    first = report.feature_diagnostics(run, data, max_points=50, tsne_points=20, echo=lines.append)
    second = report.feature_diagnostics(run, data, max_points=50, tsne_points=20)
    assert embedded and set(embedded) == {50}  # drawn before the forward pass
    n_s, n_t = len(data.source_train), len(data.target_train)
    assert first["sample"] == {"source": (50, n_s), "target": (50, n_t), "tsne": (20, 20), "seed": 0}
    assert torch.equal(first["tsne"], second["tsne"]) and first["a_distance"] == second["a_distance"]
    assert torch.equal(first["labels"], second["labels"])
    assert "report: proxy A-distance of the last network on 50 + 50 samples" in lines
    assert "report: t-SNE of 40 points (20 + 20)" in lines
    text = report.to_markdown("r", report._feature_sections(first), "files")
    assert f"50 of {n_s} source and 50 of {n_t} target training samples, drawn at random (seed 0)" in text
    assert f"20 of {n_s} source and 20 of {n_t} target training samples, drawn at random (seed 0)" in text
