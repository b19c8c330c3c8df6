import pytest
import torch

from dann.config import Config, replace
from dann.errors import DannError
from dann.methods import Batch, Method, create_method
from dann.plan import create_network, plan_run
from dann.runs import LAST_CHECKPOINT, PREV_CHECKPOINT, load_checkpoint, prepare_run_dir, read_jsonl
from dann.training import nonfinite
from dann.training.seeds import derive_seed
from dann.training.trainer import Trainer

from .test_trainer import assert_same


class InfGrad(torch.autograd.Function):
    """Zero forward, infinite gradient backward: a finite loss whose gradients overflow."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x * 0

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")


class Poisoned(Method):
    """The configured method, with a NaN source batch (or, with ``inf_grad``, overflowing gradients) at the given
    1-based steps."""

    def __init__(self, cfg: Config, bad_steps: set[int], inf_grad: bool = False) -> None:
        super().__init__(cfg.method)
        self.inner, self.steps = create_method(cfg.method), cfg.train.steps
        self.bad, self.inf_grad = bad_steps, inf_grad

    def loss(self, net, batch, progress):
        bad = round(progress * self.steps) + 1 in self.bad
        if bad and not self.inf_grad:
            batch = Batch(batch.x_s * float("nan"), batch.y_s, batch.x_t)
        out = self.inner.loss(net, batch, progress)
        if bad and self.inf_grad:
            return out._replace(total=out.total + InfGrad.apply(net.head[-1].weight.sum()))
        return out


def train(cfg: Config, data, run_dir=None, bad=(), inf_grad=False, resume=False):
    torch.manual_seed(derive_seed(cfg.train.seed, "init"))
    net = create_network(cfg.model, data.input_shape, data.num_classes)
    run_dir = prepare_run_dir(run_dir, resume) if run_dir else None
    history = Trainer(plan_run(cfg, data), run_dir, resume).fit(net, Poisoned(cfg, set(bad), inf_grad), data)
    return net, history


@pytest.mark.parametrize(
    ("log_every", "eval_every", "bad", "last_good"),
    [(3, 6, 8, 6), (4, 6, 5, None), (4, 6, 7, 6)],  # the check before an evaluation catches 5 and 7 in time
)
def test_error_names_the_step_and_terms_and_keeps_the_last_good_checkpoint(
    tiny_cfg, tiny_data, tmp_path, log_every, eval_every, bad, last_good
):
    cfg = replace(tiny_cfg, train={"log_every": log_every, "eval_every": eval_every})
    kept = f"the last checkpoint \\(step {last_good}\\) is kept" if last_good else "no checkpoint had been written yet"
    with pytest.raises(DannError, match=f"non-finite loss at step {bad} .*non-finite loss terms: cls, adv;.*{kept};"):
        train(cfg, tiny_data, tmp_path / "run", bad={bad})
    records = read_jsonl(tmp_path / "run/metrics.jsonl")
    assert [r["step"] for r in records] == ([last_good] if last_good else [])
    if last_good is None:
        assert not (tmp_path / "run" / LAST_CHECKPOINT).exists()
        return
    state = load_checkpoint(tmp_path / "run" / LAST_CHECKPOINT)
    assert state.step == last_good and all(torch.isfinite(v).all() for v in state.model.values())


@pytest.mark.parametrize("run_dir", [None, "run"])
def test_a_first_step_that_is_already_non_finite_says_no_checkpoint_exists(tiny_cfg, tiny_data, tmp_path, run_dir):
    with pytest.raises(DannError, match=r"at step 1 .*was saved; no checkpoint had been written yet;") as error:
        train(tiny_cfg, tiny_data, tmp_path / run_dir if run_dir else None, bad={1})
    assert "is kept" not in str(error.value)


def test_a_resumed_run_names_the_checkpoint_it_resumed_from(tiny_cfg, tiny_data, tmp_path):
    cfg = replace(tiny_cfg, train={"steps": 6, "eval_every": 3})
    train(replace(cfg, train={"steps": 3}), tiny_data, tmp_path / "run")
    with pytest.raises(DannError, match=r"at step 4 .*the last checkpoint \(step 3\) is kept;"):
        train(cfg, tiny_data, tmp_path / "run", bad={4}, resume=True)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_skip_discards_exactly_the_poisoned_update(tiny_cfg, tiny_data, tmp_path, optimizer):
    cfg = replace(
        tiny_cfg,
        model={"batchnorm": True},  # BatchNorm running statistics must be put back too
        optim={"name": optimizer},
        train={"steps": 3, "eval_every": 1, "on_nonfinite": "skip"},
    )
    train(cfg, tiny_data, tmp_path / "run", bad={3})
    before, after = (load_checkpoint(tmp_path / "run" / name) for name in (PREV_CHECKPOINT, LAST_CHECKPOINT))
    assert (before.step, after.step) == (2, 3)
    assert_same(before.model, after.model)
    for k, state in before.optimizer["state"].items():
        assert_same(state, after.optimizer["state"][k])
    assert [r["skipped_steps"] for r in read_jsonl(tmp_path / "run/metrics.jsonl")] == [0, 0, 1]


def test_skip_without_a_non_finite_step_trains_exactly_as_error(tiny_cfg, tiny_data):
    strict, _ = train(tiny_cfg, tiny_data)
    skipping, _ = train(replace(tiny_cfg, train={"on_nonfinite": "skip"}), tiny_data)
    assert_same(strict.state_dict(), skipping.state_dict())


def test_a_skipped_first_step_leaves_the_initial_weights(tiny_cfg, tiny_data):
    cfg = replace(tiny_cfg, train={"steps": 1, "on_nonfinite": "skip"})
    torch.manual_seed(derive_seed(cfg.train.seed, "init"))
    initial = create_network(cfg.model, tiny_data.input_shape, tiny_data.num_classes).state_dict()
    net, history = train(cfg, tiny_data, bad={1})
    assert_same(initial, net.state_dict())
    assert history[-1]["skipped_steps"] == 1


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda p: torch.optim.Adam(p, lr=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=1e-2),
    ],
    ids=["sgd", "adam", "adamw"],
)
def test_after_a_skipped_first_step_the_optimizer_acts_as_a_fresh_one(make_optimizer):
    def model_and_optimizer():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
        return net, make_optimizer(net.parameters())

    def step(net, optimizer, x):
        optimizer.zero_grad()
        net(x).sum().backward()
        optimizer.step()

    x = torch.randn(8, 3)
    net, optimizer = model_and_optimizer()
    guard = nonfinite.SkipGuard(net, optimizer)
    guard.snapshot()
    step(net, optimizer, x * float("nan"))  # creates the optimizer state, from NaN gradients
    guard.restore_unless(torch.tensor(False))
    for _ in range(2):
        step(net, optimizer, x)
    fresh, fresh_optimizer = model_and_optimizer()
    for _ in range(2):
        step(fresh, fresh_optimizer, x)
    assert_same(fresh.state_dict(), net.state_dict())


def test_skipped_steps_are_counted_across_a_resume(tiny_cfg, tiny_data, tmp_path, crash_after_first_checkpoint):
    cfg = replace(tiny_cfg, train={"on_nonfinite": "skip"})
    full, history = train(cfg, tiny_data, tmp_path / "full", bad={2, 9})
    assert [r["skipped_steps"] for r in history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(list(r["train"].values()))).all() for r in history)
    crash_after_first_checkpoint(train, cfg, tiny_data, tmp_path / "crashed", bad={2, 9})
    resumed, history = train(cfg, tiny_data, tmp_path / "crashed", bad={2, 9}, resume=True)
    assert [r["skipped_steps"] for r in history] == [1, 2]
    assert_same(full.state_dict(), resumed.state_dict())


def test_skip_gives_up_when_no_step_is_finite_any_more(tiny_cfg, tiny_data, monkeypatch):
    monkeypatch.setattr(nonfinite, "MAX_BAD_RUN", 5)
    cfg = replace(tiny_cfg, train={"on_nonfinite": "skip"})
    with pytest.raises(DannError, match="non-finite for the last 6 steps up to step 9"):
        train(cfg, tiny_data, bad=set(range(4, 13)))


def test_overflowing_gradients_behind_a_finite_loss_are_caught_before_saving(tiny_cfg, tiny_data, tmp_path):
    cfg = replace(tiny_cfg, train={"eval_every": 2, "log_every": 2})
    with pytest.raises(DannError, match=r"non-finite by step 4 although every loss was finite.*\(step 2\) is kept"):
        train(cfg, tiny_data, tmp_path / "run", bad={4}, inf_grad=True)
    assert load_checkpoint(tmp_path / "run" / LAST_CHECKPOINT).step == 2
    with pytest.raises(DannError, match=r"non-finite by step 2 .*saved; no checkpoint had been written yet;"):
        train(cfg, tiny_data, tmp_path / "first", bad={2}, inf_grad=True)


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_no_host_sync_per_step(tiny_cfg, tiny_data, monkeypatch, policy):
    """Reading a tensor on the host (item, bool, float, tolist...) happens per check, never per step."""
    calls = []
    for name in ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    counts = []
    for steps in (5, 20):
        cfg = replace(tiny_cfg, train={"steps": steps, "log_every": steps, "eval_every": steps, "on_nonfinite": policy})
        calls.clear()
        train(cfg, tiny_data, bad={3} if policy == "skip" else set())
        counts.append(len(calls))
    assert counts[0] == counts[1]
