import json

import pytest
import torch

import dann
from dann.config import replace
from dann.data import Domain, make_domain_data
from dann.errors import ConfigError, DannError, RunDirError
from dann.runs import load_checkpoint
from dann.training import trainer as trainer_module


def weights(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tiny_cfg, tiny_data):
    a = weights(dann.fit(tiny_cfg, data=tiny_data).net)
    b = weights(dann.fit(tiny_cfg, data=tiny_data).net)
    assert_same(a, b)
    c = weights(dann.fit(replace(tiny_cfg, train={"seed": 1}), data=tiny_data).net)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_permuting_target_labels_leaves_training_identical(tiny_cfg, tiny_data):
    target = tiny_data.target_eval
    permuted = Domain(target.x, target.y[torch.randperm(len(target.y), generator=torch.Generator().manual_seed(0))])
    assert not torch.equal(permuted.y, target.y)
    data_b = make_domain_data(
        Domain(
            torch.cat([tiny_data.source_train.x, tiny_data.source_val.x]),
            torch.cat([tiny_data.source_train.y, tiny_data.source_val.y]),
        ),
        permuted,
    )
    data_a = make_domain_data(
        Domain(
            torch.cat([tiny_data.source_train.x, tiny_data.source_val.x]),
            torch.cat([tiny_data.source_train.y, tiny_data.source_val.y]),
        ),
        target,
    )
    run_a, run_b = dann.fit(tiny_cfg, data=data_a), dann.fit(tiny_cfg, data=data_b)
    assert_same(weights(run_a.net), weights(run_b.net))
    assert [r["validators"] for r in run_a.history] == [r["validators"] for r in run_b.history]  # label-free
    # the labels were read, but only by evaluation: each run scores its own labels
    predictions = run_b.net(target.x).argmax(1)
    for run, labels in ((run_a, target.y), (run_b, permuted.y)):
        expected = (predictions == labels).float().mean().item()
        assert run.history[-1]["oracle"]["target_acc"] == pytest.approx(expected)


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(
    tiny_cfg, tiny_data, tmp_path, crash_after_first_checkpoint
):
    full = dann.fit(tiny_cfg, tmp_path / "full", data=tiny_data)
    crash_after_first_checkpoint(dann.fit, tiny_cfg, tmp_path / "crashed", data=tiny_data)
    assert load_checkpoint(tmp_path / "crashed/checkpoints/last.pt").step == 6
    resumed = dann.fit(out=tmp_path / "crashed", data=tiny_data, resume=True)
    assert_same(weights(full.net), weights(resumed.net))
    steps = [json.loads(line)["step"] for line in (tmp_path / "crashed/metrics.jsonl").read_text().splitlines()]
    assert steps == [6, 12]
    assert resumed.history[-1]["oracle"] == full.history[-1]["oracle"]
    assert resumed.history[-1]["selection"] == full.history[-1]["selection"]  # best.pt survives the crash
    best = load_checkpoint(tmp_path / "crashed/checkpoints/best.pt")
    assert best.step == full.history[-1]["selection"]["step"]


def test_run_directory_files_and_refusal_to_overwrite(tiny_cfg, tiny_data, tmp_path):
    run = tmp_path / "run"
    dann.fit(tiny_cfg, run, data=tiny_data)
    assert (run / "config.yaml").is_file() and (run / "checkpoints/last.pt").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [6, 12]
    assert {"cls", "adv", "domain_acc", "grl_lambda", "lr"} <= set(records[-1]["train"])
    assert "target labels" in records[-1]["oracle"]["note"]
    before = (run / "checkpoints/last.pt").read_bytes()
    with pytest.raises(RunDirError, match="already exists and is not empty; pass `resume=True` to continue it"):
        dann.fit(tiny_cfg, run, data=tiny_data)
    assert (run / "checkpoints/last.pt").read_bytes() == before  # nothing already written is lost
    dann.fit(tiny_cfg, run, data=tiny_data, overwrite=True)
    with pytest.raises(RunDirError, match="cannot resume"):
        dann.fit(out=tmp_path / "other", data=tiny_data, resume=True)


def optimizers_of(monkeypatch) -> list[torch.optim.Optimizer]:
    """The optimizers the trainer builds from now on (to read their parameter groups after training)."""
    built, build = [], trainer_module.build_optimizer

    def spy(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(trainer_module, "build_optimizer", spy)
    return built


def test_lr_follows_the_schedule_and_backbone_multiplier(tiny_cfg, tiny_data, monkeypatch):
    """The learning rates the optimizer used at the last step, not the logged one: the paper's annealing of lr at
    p = 11/12, times 0.5 on exactly the backbone's parameters."""
    built = optimizers_of(monkeypatch)
    cfg = replace(tiny_cfg, optim={"backbone_lr_mult": 0.5, "lr": 0.1}, train={"log_every": 12, "eval_every": 12})
    result = dann.fit(cfg, data=tiny_data)
    lr = 0.1 / (1 + 10 * 11 / 12) ** 0.75
    assert result.history[-1]["train"]["lr"] == pytest.approx(lr)
    backbone, rest = built[0].param_groups
    assert backbone["lr"] == pytest.approx(0.5 * lr) and rest["lr"] == pytest.approx(lr)
    assert {id(p) for p in backbone["params"]} == {id(p) for p in result.net.backbone.parameters()}
    assert len(backbone["params"]) + len(rest["params"]) == len(list(result.net.parameters()))


@pytest.mark.filterwarnings("ignore::dann.errors.DataWarning")  # one held-out sample: no dev score
def test_a_pretrained_backbone_learns_at_a_tenth_of_the_rate_by_default(tiny_cfg, monkeypatch, tmp_path):
    """optim.backbone_lr_mult=null (the default): 0.1 for a backbone that starts from weights (model.pretrained or
    model.pretrained_file), 1 for one that starts at random."""
    import timm

    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), tmp_path / "w.pth")
    built = optimizers_of(monkeypatch)
    one_step = replace(tiny_cfg, model={"backbone": "test_resnet"}, train={"steps": 1, "eval_every": 1})
    assert one_step.optim.backbone_lr_mult is None
    for weights in (str(tmp_path / "w.pth"), ""):
        dann.fit(replace(one_step, model={"pretrained_file": weights}), data=tiny_images(8))
    (pretrained, fresh) = built
    assert [g["lr"] for g in pretrained.param_groups] == pytest.approx([0.1 * one_step.optim.lr, one_step.optim.lr])
    assert [g["lr"] for g in fresh.param_groups] == pytest.approx([one_step.optim.lr, one_step.optim.lr])


def test_non_finite_loss_stops_with_the_steps_named(tiny_cfg, tiny_data):
    with pytest.raises(DannError, match=r"non-finite loss at step 2 \(non-finite steps among 1-3: 2, 3\)"):
        dann.fit(replace(tiny_cfg, optim={"lr": 1e30}), data=tiny_data)


def test_tensorboard_events_mirror_the_metrics_when_installed(tiny_cfg, tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dann.fit(tiny_cfg, tmp_path / "run", data=tiny_data)
    events = EventAccumulator(str(tmp_path / "run/tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/adv", "train/domain_acc", "validators/bnm", "source_val/acc", "oracle/target_acc"} <= tags
    assert [e.step for e in events.Scalars("validators/im")] == [6, 12]
    quiet = tmp_path / "quiet"
    dann.fit(replace(tiny_cfg, train={"tensorboard": False}), quiet, data=tiny_data)
    assert not (quiet / "tensorboard").exists()


def tiny_images(n: int = 12, seed: int = 0):
    """Source and target of ``n`` random 3×16×16 images, two classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    return make_domain_data(
        Domain(torch.rand(n, 3, 16, 16, generator=g), y), Domain(torch.rand(n, 3, 16, 16, generator=g))
    )


ONE_SAMPLE = [  # (config changes, environment, what the message says): BatchNorm would get one sample per forward
    ({"model": {"batchnorm": True}, "method": {"name": "source_only"}}, 1, 1, "method source_only forwards only"),
    ({"model": {"batchnorm": True}, "method": {"separate_forward": True}}, 1, 1, "separate_forward=true forwards"),
    ({"model": {"bottleneck_dim": 8}, "method": {"name": "source_only"}}, 1, 1, r"layers \(bottleneck\.1\)"),
    ({"model": {"bottleneck_dim": 8}, "method": {"separate_forward": True}}, 1, 1, r"layers \(bottleneck\.1\)"),
    ({"model": {"backbone": "lenet_conv", "batchnorm": True}, "method": {"name": "source_only"}}, 1, 1, "conv.1"),
    ({"model": {"backbone": "test_resnet"}, "method": {"name": "source_only"}}, 1, 1, r"backbone\.conv1\.1, .*\.\.\."),
    ({"model": {"batchnorm": True}, "method": {"name": "source_only"}}, 2, 2, r"=2 split over 2 processes \(1 per"),
    ({"model": {"batchnorm": True}, "method": {"separate_forward": True}}, 4, 4, r"set train.batch_size=8 or more"),
]


@pytest.mark.parametrize(("changes", "batch_size", "processes", "says"), ONE_SAMPLE)
def test_a_batchnorm_layer_never_gets_one_sample_and_the_run_directory_is_not_made(
    tiny_cfg, tiny_data, tmp_path, monkeypatch, changes, batch_size, processes, says
):
    if processes > 1:  # torchrun's environment for rank 0: the check comes before the process group is joined
        monkeypatch.setenv("WORLD_SIZE", str(processes))
        monkeypatch.setenv("RANK", "0")
    images = changes["model"].get("backbone", "mlp") != "mlp"
    cfg = replace(tiny_cfg, train={"batch_size": batch_size}, **changes)
    data = tiny_images() if images else tiny_data
    with pytest.raises(ConfigError, match=says) as error:
        dann.fit(cfg, tmp_path / "run", data=data)
    message = str(error.value)
    assert message.startswith(f"train.batch_size={batch_size} ") and "a single sample per training forward" in message
    assert message.endswith(
        f"BatchNorm needs at least 2, so set train.batch_size={2 * processes} or more"
        + (" (2 per process)" if processes > 1 else "")
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"model": {"batchnorm": True}},  # DANN's joint forward: one source and one target sample
        {"model": {"bottleneck_dim": 8, "mlp_dims": [16]}},
        {"method": {"name": "source_only"}},  # no BatchNorm at all
        {"method": {"separate_forward": True}},
    ],
)
def test_one_sample_per_domain_trains_when_no_batchnorm_layer_sees_it_alone(tiny_cfg, tiny_data, changes):
    cfg = replace(tiny_cfg, train={"batch_size": 1, "steps": 2, "eval_every": 2}, **changes)
    assert dann.fit(cfg, data=tiny_data).history[-1]["step"] == 2


def test_the_batchnorm_check_follows_the_rows_of_each_process(tiny_cfg, tiny_data):
    from dann.methods import create_method
    from dann.plan import create_network
    from dann.training.steps import check_batchnorm_rows

    net = create_network(replace(tiny_cfg, model={"batchnorm": True}).model, (4,), 2)
    joint, alone = (
        create_method(tiny_cfg.method),
        create_method(replace(tiny_cfg, method={"name": "source_only"}).method),
    )
    check_batchnorm_rows(net, joint, 2, processes=2)  # 1 row per domain and process, forwarded together: 2 samples
    check_batchnorm_rows(net, alone, 4, processes=2)
    with pytest.raises(ConfigError, match=r"split over 4 processes \(1 per process and domain\).*=8 or more \(2 per"):
        check_batchnorm_rows(net, alone, 4, processes=4)
