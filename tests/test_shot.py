"""SHOT as published (tim-learn/SHOT, digit/): pseudo-labels from the whole target set clustered once per epoch in eval
mode, a sample's label independent of its batch, only the final classifier frozen, and its reference layout."""

import re

import pytest
import torch
import torch.nn.functional as F

import dann
from dann.config import MethodConfig, ModelConfig, replace
from dann.data import Domain
from dann.errors import ConfigError
from dann.methods import Batch, create_method
from dann.methods.base import Forward
from dann.methods.shot import HypothesisTransfer, augmented, classifier, cluster_centres, nearest_centre
from dann.plan import build_network, network_model
from dann.runs import LAST_CHECKPOINT, load_checkpoint

from .conftest import tiny_config, tiny_domains

G = torch.Generator().manual_seed(0)
X_T = torch.randn(40, 4, generator=G) + 2.0 * torch.randint(0, 3, (40, 1), generator=G)  # target samples


def make(head_dims=(), bottleneck=16):
    torch.manual_seed(0)
    cfg = MethodConfig(name="shot")
    model = ModelConfig(backbone="mlp", mlp_dims=(8,), head_dims=head_dims, bottleneck_dim=bottleneck)
    net, method = build_network(model, cfg, (4,), 3), create_method(cfg)
    method.prepare(net)
    return net.train(), method, method.terms[0][2]


def test_weighted_kmeans_recovers_well_separated_clusters_and_never_picks_an_empty_one():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(3).repeat_interleave(20)
    x = 8 * torch.eye(6)[y] + torch.randn(60, 6, generator=g)
    logits = 2 * torch.eye(4)[y] + 1.5 * torch.randn(60, 4, generator=g)  # noisy predictions over 4 classes
    logits[:, 3] = -10  # class 3: predicted for no sample
    p = logits.softmax(1)
    assert (p.argmax(1) != y).sum() >= 10  # many predictions are wrong...
    f = augmented(x)
    centres = cluster_centres(f, p)
    assert torch.equal(nearest_centre(f, centres), y)  # ...the clusters are right
    torch.testing.assert_close(centres[:3], torch.stack([f[y == k].mean(0) for k in range(3)]))  # round 2: hard means
    assert torch.equal(centres[3], torch.zeros(7))
    perm = torch.randperm(60, generator=g)
    torch.testing.assert_close(cluster_centres(f[perm], p[perm]), centres)  # the order of the samples is no matter
    # an empty class's all-zero centre is never the nearest, even for a sample far from every other centre
    far = F.normalize(torch.tensor([[-1.0, -1.0]]), dim=1)
    assert nearest_centre(far, torch.tensor([[1.0, 0.0], [0.0, 0.0]])).tolist() == [0]


def test_refresh_clusters_the_whole_target_set_in_eval_mode_from_what_the_classifier_reads():
    net, _, term = make(head_dims=(5,))
    statistics = [b.clone() for b in net.buffers()]
    term.refresh(net, Domain(X_T), 3, batch_size=7)  # in batches of 7: the same as one pass
    assert net.training and all(torch.equal(a, b) for a, b in zip(statistics, net.buffers(), strict=True))
    net.eval()
    with torch.no_grad():
        g = net.head[:-1](net.forward_features(X_T))  # the classifier's input, after the head's hidden layer
        expected = cluster_centres(augmented(g), net.head[-1](g).softmax(1))
    assert term.step == 3 and term.centres.shape == (3, 6)
    torch.testing.assert_close(term.centres, expected)


def test_a_samples_pseudo_label_is_the_same_whichever_batch_it_arrives_in():
    net, _, term = make()
    term.refresh(net, Domain(X_T), 0, batch_size=64)
    alone = term.pseudo_labels(net, X_T)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    batched = torch.empty_like(alone)
    for rows in (perm[:8], perm[8:24], perm[24:]):  # the same samples, in other company
        batched[rows] = term.pseudo_labels(net, X_T[rows])
    assert torch.equal(batched, alone) and len(set(alone.tolist())) > 1
    assert net.training
    # and the loss trains toward those labels
    x_t = X_T[perm[:8]]
    z_t = net.forward_head(net.forward_features(x_t))
    _, extra = term(Forward(net, Batch(x_t[:0], torch.zeros(0).long(), x_t), x_t[:0], x_t, z_t[:0], z_t, 0.0))
    torch.testing.assert_close(extra["pseudo_ce"], F.cross_entropy(z_t, alone[perm[:8]]).detach())


def test_only_the_final_linear_classifier_is_frozen():
    net, method, _ = make(head_dims=(5,))
    x_t = X_T[:16]
    method.loss(net, Batch(x_t[:0], torch.zeros(0).long(), x_t), 0.5).total.backward()
    assert classifier(net) is net.head[-1] and net.head[-1].weight.grad is None and net.head[-1].bias.grad is None
    for trained in (net.head[0].weight, net.bottleneck[0].weight, net.bottleneck[1].weight):
        assert trained.grad is not None and trained.grad.abs().max() > 0


def test_shot_has_the_reference_bottleneck_and_beta():
    model = network_model(ModelConfig(backbone="mlp"), MethodConfig(name="shot"), (4,))
    assert model.bottleneck_dim == 256 and model.head_dims == ()
    assert create_method(MethodConfig(name="shot")).cfg.shot_beta == 0.1


def shot_config(source, steps=12, **train):
    cfg = replace(tiny_config(), model={"bottleneck_dim": 16, "init_from": str(source)}, method={"name": "shot"})
    return replace(cfg, train={"steps": steps, **train})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("shot") / "source"
    cfg = replace(tiny_config(), model={"bottleneck_dim": 16}, method={"name": "source_only"})
    dann.fit(cfg, out, data=tiny_domains())
    return out


@pytest.fixture
def refreshed(monkeypatch):
    """The steps at which the trainer asked SHOT for its centres."""
    steps, refresh = [], HypothesisTransfer.refresh

    def spy(self, net, target, step, batch_size):
        steps.append(step)
        assert len(target) == 60 and target.y is None  # the whole target training set, without labels
        refresh(self, net, target, step, batch_size)

    monkeypatch.setattr(HypothesisTransfer, "refresh", spy)
    return steps


def test_the_centres_are_computed_at_each_epoch_start_only(source, refreshed):
    dann.fit(shot_config(source), data=tiny_domains())  # 60 target samples in batches of 16: 4 steps an epoch
    assert refreshed == [0, 4, 8]
    refreshed.clear()
    dann.fit(shot_config(source, accumulate=2), data=tiny_domains())  # 32 samples a step: 2 steps an epoch
    assert refreshed == [0, 2, 4, 6, 8, 10]


def test_a_resumed_run_continues_with_the_saved_centres_without_another_pass(
    source, refreshed, tmp_path, crash_after_first_checkpoint
):
    crash_after_first_checkpoint(dann.fit, shot_config(source), tmp_path / "run", data=tiny_domains())  # at step 6
    state = load_checkpoint(tmp_path / "run" / LAST_CHECKPOINT).method["shot"]
    assert state["step"] == 4 and state["centres"].shape == (2, 17)
    refreshed.clear()
    resumed = dann.fit(out=tmp_path / "run", resume=True, data=tiny_domains())
    assert refreshed == [8]  # none at step 6: the epoch's centres came with the checkpoint
    full = dann.fit(shot_config(source), data=tiny_domains())
    for k, v in full.net.state_dict().items():
        assert torch.equal(v, resumed.net.state_dict()[k]), k


def test_shot_adapts_its_starts_network_whatever_its_layout(tmp_path):
    """Under auto (or a key's default), shot takes the network of the run it starts from (no bottleneck here, though
    shot's own width is 256); a value given against the start's is refused, naming both, before anything is
    written."""
    dann.fit(
        replace(tiny_config(), method={"name": "source_only"}, train={"steps": 2}), tmp_path / "s", data=tiny_domains()
    )
    auto = {"init_from": str(tmp_path / "s"), "bottleneck_dim": None}
    cfg = replace(tiny_config(), method={"name": "shot"}, model=auto, train={"steps": 2})
    assert dann.fit(cfg, tmp_path / "shot", data=tiny_domains()).config.model.bottleneck_dim == 0
    plain = replace(cfg, model={"mlp_dims": list(ModelConfig().mlp_dims)})  # a key at its default: the start's too
    assert dann.fit(plain, data=tiny_domains()).config.model.mlp_dims == (16,)
    for given, said in (
        ({"bottleneck_dim": 256}, "model.bottleneck_dim=0 there, 256 here"),
        ({"weight_norm": True}, "model.weight_norm=False there, True here"),
        ({"input_norm": "per_image", "bottleneck_dim": 8}, "model.bottleneck_dim=0 there, 8 here; model.input_norm"),
    ):
        with pytest.raises(ConfigError, match=re.escape(said)):
            dann.fit(replace(cfg, model=given), tmp_path / "refused", data=tiny_domains())
        assert not (tmp_path / "refused").exists()
    for inside in ("s", "s/again"):  # a run never writes over (or into) the run it starts from
        with pytest.raises(ConfigError, match=r"would write over it: choose another --out"):
            dann.fit(cfg, tmp_path / inside, data=tiny_domains(), overwrite=True)
    assert (tmp_path / "s" / LAST_CHECKPOINT).is_file() and not (tmp_path / "s" / "again").exists()


@pytest.fixture(scope="module")
def reference_source(tmp_path_factory):
    """A source model on tim-learn/SHOT's network: Linear-BN-Dropout(0.5) bottleneck, weight-normalized classifier."""
    out = tmp_path_factory.mktemp("shot") / "reference"
    layout = {"bottleneck_dim": 16, "bottleneck_kind": "bn_dropout", "weight_norm": True}
    dann.fit(replace(tiny_config(), model=layout, method={"name": "source_only"}), out, data=tiny_domains())
    return out


def test_shot_on_the_reference_network_freezes_the_weight_normalized_classifier(reference_source, tmp_path):
    start = load_checkpoint(reference_source / LAST_CHECKPOINT).model
    assert {"head.0.parametrizations.weight.original0", "head.0.parametrizations.weight.original1"} <= set(start)
    auto = {"init_from": str(reference_source), "bottleneck_dim": None}
    run = dann.fit(replace(shot_config(reference_source), model=auto), tmp_path / "run", data=tiny_domains())
    model = run.config.model
    assert (model.bottleneck_dim, model.bottleneck_kind, model.weight_norm) == (16, "bn_dropout", True)
    assert [type(m) for m in run.net.bottleneck] == [torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.Dropout]
    after = run.net.state_dict()
    for key in ("head.0.parametrizations.weight.original0", "head.0.parametrizations.weight.original1", "head.0.bias"):
        assert torch.equal(after[key], start[key]), key  # the source hypothesis, g and v alike, as trained
    assert not torch.equal(after["bottleneck.0.weight"], start["bottleneck.0.weight"])  # the bottleneck adapted


def test_a_run_started_from_a_trained_source_model_says_its_label_shift_estimate_first(source, tmp_path):
    lines: list[str] = []
    dann.fit(shot_config(source), tmp_path / "run", data=tiny_domains(), echo=lines.append)
    said = [line for line in lines if line.startswith("label shift: ")]
    assert len(said) == 1 and lines.index(said[0]) < next(i for i, x in enumerate(lines) if x.startswith("device:"))
    assert re.match(
        rf"label shift: \d\.\d\d \[\d\.\d\d, \d\.\d\d\] \(total variation between the source's class proportions and "
        rf"the target's, estimated by {re.escape(str(source))}\), (large|not shown to be large)",
        said[0],
    )
    quiet: list[str] = []
    dann.fit(replace(shot_config(source), model={"init_from": ""}, method={"name": "dann"}), data=tiny_domains(),
             echo=quiet.append)  # fmt: skip
    assert not any(line.startswith("label shift: ") for line in quiet)  # no trained model, no estimate
