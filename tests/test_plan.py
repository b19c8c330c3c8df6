"""dann.plan: a run's choices are resolved once, by the plan module alone, before anything is written."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import dann
from dann import api
from dann import plan as plan_module
from dann.cli import main
from dann.config import load_config, replace
from dann.data import as_domain, make_domain_data
from dann.errors import DannError
from dann.plan import RunPlan, plan_run
from dann.training.seeds import derive_seed

from .conftest import blobs

SRC = Path(dann.__file__).parent
BENCHMARKS = SRC.parent.parent / "benchmarks"
PLAN = SRC / "plan.py"


def resolvers() -> set[str]:
    """The names of the package's ``resolve_*`` functions, wherever they are defined."""
    names = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("resolve_"):
                names.add(node.name)
    return names


def resolver_uses(source: str, names: set[str]) -> list[str]:
    """Where ``source`` imports or calls one of ``names``: ``"line N: name"`` for each."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found += [f"line {node.lineno}: {a.name}" for a in node.names if a.name in names]
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in names:
                found.append(f"line {node.lineno}: {name}")
    return found


def test_only_the_plan_module_imports_or_calls_a_resolver():
    names = resolvers()
    assert {"resolve_method", "resolve_model", "resolve_precision", "resolve_device", "resolve_threads"} <= names
    files = [p for p in [*SRC.rglob("*.py"), *BENCHMARKS.glob("*.py")] if p != PLAN]
    uses = {str(p.relative_to(SRC.parent.parent)): resolver_uses(p.read_text(), names) for p in files}
    assert {path: found for path, found in uses.items() if found} == {}
    assert resolver_uses(PLAN.read_text(), names)  # the plan module is where they are used


def test_the_guard_finds_an_import_and_a_call():
    names = {"resolve_method", "resolve_precision"}
    source = "from dann.config import resolve_method\nimport x\nx.resolve_precision('auto')\nresolved = 1\n"
    assert resolver_uses(source, names) == ["line 1: resolve_method", "line 3: resolve_precision"]


def plans(monkeypatch) -> list[RunPlan]:
    """Every plan ``dann.fit`` builds from now on, in order."""
    built = []

    def spy(*args, **kwargs):
        built.append(plan_run(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(api, "plan_run", spy)
    return built


def test_a_run_is_planned_once_and_its_choices_resolved_once(tiny_cfg, tiny_data, monkeypatch, tmp_path):
    built = plans(monkeypatch)
    calls = []
    for name in ("resolve_device", "resolve_precision", "resolve_channels_last", "resolve_threads", "resolve_method"):
        resolver = getattr(plan_module, name)
        monkeypatch.setattr(plan_module, name, lambda *a, _f=resolver, _n=name, **k: (calls.append(_n), _f(*a, **k))[1])
    cfg = replace(tiny_cfg, train={"precision": "auto", "threads": "auto"})
    result = dann.fit(cfg, tmp_path / "run", data=tiny_data)
    assert len(built) == 1
    assert sorted(calls) == sorted(
        ["resolve_device", "resolve_precision", "resolve_channels_last", "resolve_threads", "resolve_method"]
    )
    plan = built[0]
    assert result.config == plan.config  # what the caller gets is the plan's config
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved == plan.config.to_dict()  # config.yaml is the plan's config
    t = plan.config.train
    assert t.precision == "fp32" and t.channels_last is False and t.threads == plan.threads.count == 1
    assert isinstance(t.eval_every, int) and isinstance(t.log_every, int)
    assert plan.config.model.head_dims is not None and plan.config.method.lambda_adv == 1.0
    assert plan.methods == (plan.config.method,)
    assert plan.device == torch.device("cpu") and plan.rows == (0, t.batch_size)
    assert plan.seeds == {p: derive_seed(t.seed, p) for p in ("init", "train")}
    summary = result.summary  # the start-up summary is the plan printed
    assert (summary["precision"], summary["backbone"], summary["method"]) == ("fp32", "mlp", "dann")


def test_the_plan_resolves_every_auto_from_the_data(tiny_data):
    cfg = load_config(values={"method": {"name": "mdd"}, "train": {"steps": 30, "device": "cpu"}})
    plan = plan_run(cfg, tiny_data)
    model, method, t = plan.config.model, plan.config.method, plan.config.train
    assert model.backbone == "mlp" and model.bottleneck_dim == 256 and model.head_dims == ()  # MDD's reference layout
    assert method.grl_hi == 0.1 and method.name == "mdd"  # the method's own reference defaults
    assert (t.eval_every, t.log_every) != ("auto", "auto") and t.precision == "fp32"  # vectors train in fp32
    assert plan.control is None and plan.input_note == ""


def test_a_staged_run_plans_each_stages_method():
    x_s, y_s = blobs(60, 0.0, 0)
    x_m, y_m = blobs(24, 0.8, 1)
    x_t, _ = blobs(40, 1.5, 2)
    sources = {"source": as_domain(x_s, y_s), "mid": as_domain(x_m, y_m, "mid")}
    data = make_domain_data(sources, as_domain(x_t), val_fraction=0.2, intermediate=["mid"])
    cfg = load_config("staged", values={"model": {"backbone": "mlp"}, "train": {"steps": 12, "device": "cpu"}})
    plan = plan_run(cfg, data)
    assert [m.name for m in plan.methods] == ["source_only", "dann"]
    assert plan.methods[1].grl_schedule == "warm" and plan.methods[1].lambda_adv == 1.0
    assert plan.methods[0].label_smoothing == 0.1  # each stage's method with its own reference defaults
    assert plan.config.train.precision == "fp32"  # a stage has an adversarial branch: auto keeps fp32


REFUSED = [
    ({"method": {"name": "shot"}}, {}, "adapts a trained source model"),
    ({"method": {"name": "source_only"}}, {"control": True}, "is the source-only control already"),
    ({"train": {"device": "cuda:7"}}, {}, "train.device is 'cuda:7'"),
    ({"train": {"batch_size": 16}}, {"WORLD_SIZE": "3"}, "must be divisible by the number of processes"),
]


@pytest.mark.parametrize(("changes", "how", "says"), REFUSED)
def test_a_refused_run_is_refused_by_its_plan_before_any_file_is_written(
    tiny_cfg, tiny_data, tmp_path, monkeypatch, changes, how, says
):
    if "WORLD_SIZE" in how:  # rank 0 of a torchrun launch: the plan refuses before the process group is joined
        monkeypatch.setenv("WORLD_SIZE", how["WORLD_SIZE"])
        monkeypatch.setenv("RANK", "0")
    cfg = replace(tiny_cfg, **changes)
    control = how.get("control", False)
    with pytest.raises(DannError, match=says):
        plan_run(cfg, tiny_data, control=control)
    with pytest.raises(DannError, match=says):
        dann.fit(cfg, tmp_path / "run", data=tiny_data, control=control)
    assert not (tmp_path / "run").exists()


def test_fit_the_command_line_and_the_classifier_plan_the_same_run(tmp_path, monkeypatch):
    x_s, y_s = blobs(80, 0.0, 0)
    x_t, _ = blobs(60, 1.5, 1)
    np.savez(tmp_path / "s.npz", x=x_s, y=y_s)
    np.savez(tmp_path / "t.npz", x=x_t)
    built = plans(monkeypatch)
    settings = {"method.name": "dann", "train.steps": 4, "train.batch_size": 16, "train.eval_every": 4,
                "train.device": "cpu", "train.seed": 0, "data.val_fraction": 0.0}  # fmt: skip
    files = {"data.source": str(tmp_path / "s.npz"), "data.target": str(tmp_path / "t.npz")}
    dann.fit(load_config(overrides=[f"{k}={v}" for k, v in {**settings, **files}.items()]))
    sets = [arg for k, v in {**settings, **files}.items() for arg in ("--set", f"{k}={v}")]
    assert main(["train", *sets, "--out", str(tmp_path / "run"), "--quiet", "--no-report"]) == 0
    dann.DANNClassifier(method="dann", max_steps=4, batch_size=16, device="cpu", random_state=0).fit(
        x_s, y_s, X_target=x_t
    )
    assert len(built) == 3

    def choices(plan: RunPlan) -> dict:
        t = plan.config.train
        picked = (t.precision, t.channels_last, t.threads, t.eval_every, t.log_every, t.batch_size, t.seed)
        return {
            "model": plan.config.model, "method": plan.config.method, "train": picked, "methods": plan.methods,
            "device": plan.device, "rows": plan.rows, "seeds": plan.seeds, "input": plan.input_note,
        }  # fmt: skip

    by_fit, by_cli, by_classifier = (choices(p) for p in built)
    assert by_fit == by_cli == by_classifier
    assert by_fit["model"].backbone == "mlp" and by_fit["model"].bottleneck_dim == 256  # auto, resolved
