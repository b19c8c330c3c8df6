"""Training in stages (``train.stages``): one run, one network and one optimizer, trained stage after stage.

A stage has its own method (``method`` keys over the run's), steps, learning-rate and GRL schedules (both follow the
stage's own progress ``p = (step - start) / steps``), the labeled domains whose cross-entropy it trains with a
weight λ each (``classify``), and the labeled domains its method aligns with the target (``align``): each labeled
domain the stage reads gets its own batch of ``train.batch_size`` per step (see ``dann.methods.staged``). Domains
are named as in ``data.source``, or by role: ``source`` (the labeled domains not marked intermediate) and
``intermediate`` (``data.intermediate``).

Every stage ends with an evaluation and a checkpoint, kept as ``checkpoints/<stage>.pt``; ``metrics.jsonl`` records
the stage of each evaluation; a resumed run continues inside the stage of its checkpoint. A run without
``train.stages`` is one stage: its method on the pooled labeled domains, over ``train.steps``, exactly as before."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config, MethodConfig, OptimConfig, stage_sections
from ..data.domains import DomainData, LabeledDomain
from ..data.loaders import Rows, step_batches
from ..errors import ConfigError, DataWarning
from ..methods.base import METHODS, Method, Term, create_method, target_ratio, warn_unused_options
from ..methods.staged import StageLoss
from ..models.network import DomainAdaptNet
from ..runs import LAST_CHECKPOINT, atomic_write_bytes
from .schedules import LR_SCHEDULES
from .stage_config import stage_label, stage_steps
from .steps import Batches

ROLES = ("source", "intermediate")
DISCRIMINATOR_KEYS = ("domain_discriminator", "cdan_max_dim")  # method keys that shape the network's discriminator


@dataclass
class Stage:
    """Steps ``start`` to ``start + steps`` of a run: ``method`` (a ``StageLoss`` in a staged run), the optimizer
    schedule ``optim``, and ``parts``, the labeled domains batched one by one (None: the pooled source stream)."""

    index: int
    name: str  # "" in a run without stages
    start: int
    steps: int
    method: Method | StageLoss
    optim: OptimConfig
    parts: tuple[int, ...] | None = None

    @property
    def end(self) -> int:
        return self.start + self.steps

    def progress(self, step: int) -> float:
        """The stage's progress in [0, 1) at ``step``: what its schedules read."""
        return (step - self.start) / self.steps

    def lr(self, step: int) -> float:
        o = self.optim
        return o.lr * LR_SCHEDULES.get(o.lr_schedule)(self.progress(step), o.lr_alpha, o.lr_beta)


class StagePlan:
    """A run's stages and the one being trained; it stands for the method in checkpoints (``state_dict``)."""

    def __init__(self, stages: list[Stage], staged: bool) -> None:
        self.stages, self.staged = stages, staged
        self.current, self.prepared = stages[0], {0}

    def at(self, step: int) -> Stage:
        return next((s for s in self.stages if s.start <= step < s.end), self.stages[-1])

    def prepare(self, net: DomainAdaptNet) -> None:
        """Prepare the first stage's method (before the optimizer sees the parameters, as for any run)."""
        self.stages[0].method.prepare(net)

    def enter(self, step: int, net: DomainAdaptNet) -> Stage:
        """The stage of ``step``, its method prepared the first time it is entered (at its start, or on resume)."""
        self.current = self.at(step)
        if self.current.index not in self.prepared:
            self.current.method.prepare(net)
            self.prepared.add(self.current.index)
        return self.current

    def record(self, done: int) -> dict[str, Any]:
        """What an evaluation after ``done`` steps records about the stage (nothing in a run without stages)."""
        stage = self.current
        return {"stage": stage.name, "stage_progress": (done - stage.start) / stage.steps} if self.staged else {}

    def eval_weights(self) -> dict[str, torch.Tensor] | None:
        """The weights the current stage's method evaluates with (an EMA teacher), or None: the trained ones."""
        return self.current.method.eval_weights()

    def state_dict(self) -> dict[str, Any]:
        state = self.current.method.state_dict()
        return {"stage": self.current.name, "state": state} if self.staged else state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.staged:
            self.stages[0].method.load_state_dict(state)
        elif state:
            next(s for s in self.stages if s.name == state["stage"]).method.load_state_dict(state["state"])


def plan_stages(cfg: Config, method: Method, data: DomainData) -> StagePlan:
    """The stages of a run: ``train.stages`` resolved against the data's labeled domains, or one stage of
    ``method`` over ``train.steps``. Raises ``ConfigError`` for a domain a stage names that the data lacks."""
    if not cfg.train.stages:
        method.steps = cfg.train.steps  # what step-counted schedules (method.grl_horizon) read
        return StagePlan([Stage(0, "", 0, cfg.train.steps, method, cfg.optim)], staged=False)
    stages, start = [], 0
    for i, steps in enumerate(stage_steps(cfg.train.stages, cfg.train.steps)):
        stages.append(_stage(cfg, i, start, steps, data.domains))
        start += steps
    return StagePlan(stages, staged=True)


def stage_method(cfg: Config, i: int) -> tuple[MethodConfig, OptimConfig]:
    """The method and optimizer sections stage ``i`` trains with (``config.stage_sections``), but for the run's
    ``method.regularizers``: they train in the stages whose method reads the target batch; a stage that reads none
    (the staged preset's supervised first stage) runs without them. A stage's own regularizers are kept (and refused
    by its method where it reads no target batch)."""
    method_cfg, optim = stage_sections(cfg, i)
    if method_cfg.regularizers and "regularizers" not in cfg.train.stages[i].method:
        if not METHODS.get(method_cfg.name).uses_target:
            method_cfg = dataclasses.replace(method_cfg, regularizers={})
    return method_cfg, optim


def target_batches(cfg: Config) -> dict[str, int]:
    """Target rows per step (``train.batch_size`` × ``methods.base.target_ratio``) of each stage that reads the
    target batch, by stage name; one entry named "" in a run without ``train.stages``."""
    if not cfg.train.stages:
        return {"": cfg.train.batch_size * target_ratio(cfg.method)}
    out = {}
    for i, stage in enumerate(cfg.train.stages):
        method_cfg, _ = stage_method(cfg, i)
        if METHODS.get(method_cfg.name).uses_target:
            out[stage_label(i, stage)] = cfg.train.batch_size * target_ratio(method_cfg)
    return out


def batch_words(batch_size: int, targets: dict[str, int] | None) -> str:
    """A step's batch in words: "64 per domain", or where ``targets`` (``target_batches`` without the entries equal
    to ``batch_size``) has more target rows per step (``method.uratio``) "64 source + 192 target [in stage s]"."""
    if not targets:
        return f"{batch_size} per domain"
    return ", ".join(
        f"{batch_size} source + {rows} target" + (f" in stage {stage}" if stage else "")
        for stage, rows in targets.items()
    )


def bind_stages(stages: StagePlan, data: DomainData, cfg: Config, echo: Callable[[str], None] | None) -> None:
    """``Method.bind`` for each stage's method in turn, each after the terms of the stages before it (``Term.share``):
    what two stages would build alike (CLIP's teacher) is built once."""
    bound: list[Term] = []
    for stage in stages.stages:
        method = getattr(stage.method, "inner", stage.method)
        method.bind(data, cfg, echo, bound)
        bound.extend(term for _, _, term in method.terms)


def stage_terms(cfg: Config) -> list[str]:
    """Each stage of ``train.stages`` as "name: method+regularizer:weight", the terms it trains (none without
    stages)."""
    out = []
    for i, stage in enumerate(cfg.train.stages):
        method_cfg, _ = stage_method(cfg, i)
        terms = method_cfg.name + "".join(f"+{name}:{w:g}" for name, w in method_cfg.regularizers.items())
        out.append(f"{stage_label(i, stage)}: {terms}")
    return out


def warn_unused_stage_options(cfg: Config, stages: list[Stage]) -> None:
    """The run-level method.* keys set away from their defaults that no stage's terms read, in one warning (a
    staged run's own method is not what trains: its stages are)."""
    read = {key for stage in stages for _, _, term in stage.method.inner.terms for key in term.options}
    warn_unused_options(cfg.method, read, "the stages of this run", "do not read")


def _stage(cfg: Config, i: int, start: int, steps: int, domains: list[LabeledDomain]) -> Stage:
    sc, name = cfg.train.stages[i], stage_label(i, cfg.train.stages[i])
    where = f"train.stages[{i}] ({name})"
    method_cfg, optim = stage_method(cfg, i)
    with warnings.catch_warnings():  # a run-level key another stage reads is no mistake here
        warnings.simplefilter("ignore", DataWarning)
        inner = create_method(method_cfg)
    inner.steps = steps
    _check_discriminator(cfg, method_cfg, inner, where)
    classify: dict[int, float] = {}
    if inner.uses_source:
        for key, weight in (sc.classify or {d.name: 1.0 for d in domains}).items():
            for k in _named(key, domains, f"{where}.classify"):
                if k in classify:
                    raise ConfigError(f"{where}.classify names labeled domain {domains[k].name!r} twice")
                classify[k] = weight
    elif sc.classify:
        raise ConfigError(f"{where}: method {inner.cfg.name} reads no labeled batch, so classify must be empty")
    align: list[int] = []
    if inner.uses_source and inner.uses_target:
        names = sc.align if sc.align is not None else [domains[k].name for k in classify]
        align = sorted({k for n in names for k in _named(n, domains, f"{where}.align")})
        if not align:
            raise ConfigError(f"{where}: method {inner.cfg.name} aligns labeled samples with the target: name a "
                              "labeled domain in align")  # fmt: skip
    elif sc.align:
        raise ConfigError(f"{where}: method {inner.cfg.name} aligns nothing with the target, so align must be empty")
    parts = tuple(sorted(set(classify) | set(align)))
    at = {k: j for j, k in enumerate(parts)}
    loss = StageLoss(
        inner,
        tuple(domains[k].name for k in parts),
        {at[k]: weight for k, weight in classify.items()},
        tuple(at[k] for k in align),
        sc.sample_weights,
    )
    return Stage(i, name, start, steps, loss, optim, parts)


def _named(name: str, domains: list[LabeledDomain], where: str) -> list[int]:
    """The labeled domains ``name`` stands for: the one of that name, else those of the role ``source`` or
    ``intermediate``. Raises ``ConfigError`` naming the valid names."""
    exact = [k for k, d in enumerate(domains) if d.name == name]
    if exact:
        return exact
    if name in ROLES:
        found = [k for k, d in enumerate(domains) if d.intermediate == (name == "intermediate")]
        if found:
            return found
        raise ConfigError(
            f"{where} names the role {name!r}, but no labeled domain has it: mark the labeled domain(s) nearest the "
            f"target with data.intermediate (labeled domains: {', '.join(d.name for d in domains)})"
        )
    raise ConfigError(
        f"{where} names {name!r}, which is not a labeled domain; labeled domains: "
        f"{', '.join(d.name for d in domains)}; roles: {', '.join(ROLES)}"
    )


def _check_discriminator(cfg: Config, stage_cfg: Any, inner: Method, where: str) -> None:
    """One network serves every stage: a stage's adversarial term must read the discriminator that the run's
    ``method`` section builds. Raises ``ConfigError`` saying which key to set for the whole run."""
    if not inner.uses_discriminator:
        return
    run = cfg.method  # the run's, resolved by its plan (dann.plan)
    built = (METHODS.get(run.name).term or Term).discriminator.__func__  # type: ignore[attr-defined]
    for _, _, term in inner.terms:
        if term.uses_discriminator and type(term).discriminator.__func__ is not built:  # type: ignore[attr-defined]
            raise ConfigError(
                f"{where}: method {stage_cfg.name}'s discriminator is not the one method.name={run.name} builds for "
                f"the run; set method.name={stage_cfg.name} (the run's network), and the other stages' own methods"
            )
    for key in DISCRIMINATOR_KEYS:
        if getattr(stage_cfg, key) != getattr(run, key):
            raise ConfigError(f"{where}: method.{key} shapes the run's one discriminator; set it for the whole run")


def part_seed(seed: int, index: int) -> int:
    """The stream seed of labeled domain ``index``: the first domain's is the pooled stream's (``train.seed``), the
    target's is ``train.seed + 1``, the others follow."""
    return seed if index == 0 else seed + 1 + index


class PartBatches:
    """One batch per labeled domain of a stage, joined: ``get_rows(step)`` → the parts' rows one after another, with
    each row's domain index ``d`` and each part's size in ``parts``; weights where a part has some (1 elsewhere)."""

    def __init__(self, streams: list[Batches], parts: tuple[int, ...]) -> None:
        self.streams, self.parts = streams, parts

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.get_rows(step)[:2]

    def get_rows(self, step: int) -> Rows:
        rows = [s.get_rows(step) for s in self.streams]
        x, y = torch.cat([r.x for r in rows]), torch.cat([r.y for r in rows])  # type: ignore[misc]
        w = None
        if any(r.w is not None for r in rows):
            w = torch.cat([r.w if r.w is not None else torch.ones(len(r.x), device=r.x.device) for r in rows])
        d = torch.cat(
            [
                torch.full((len(r.x),), k, dtype=torch.int64, device=r.x.device)
                for r, k in zip(rows, self.parts, strict=True)
            ]
        )
        return Rows(x, y, w, d, tuple(len(r.x) for r in rows))


def part_streams(
    cfg: Config, data: DomainData, stage: Stage, start: int, device: torch.device, rows: tuple[int, int]
) -> tuple[PartBatches | None, Batches | None]:
    """The streams of a stage of ``train.stages`` resumed at step ``start``: one per labeled domain it reads, joined
    (None when it reads none), and the target's (None when its method reads no target batch); ``rows``: this
    process's rows of each step's global batch."""
    t, augment, balanced = cfg.train, cfg.data.augment, cfg.data.balance_classes
    first = start * t.accumulate  # micro-batch indices: see dann.training.steps
    parts, uses_target = stage.parts or (), stage.method.uses_target
    share = len(parts) + uses_target
    streams = [
        step_batches(data.domains[k].train, t.batch_size, part_seed(t.seed, k), device, first, augment, balanced, rows,
                     share, cfg.data.invert)
        for k in parts
    ]  # fmt: skip
    target = None
    if uses_target:
        ratio = target_ratio(stage.method.cfg)
        target = target_stream(cfg, data, t.seed + 1, device, first, rows, share, ratio)
    return (PartBatches(streams, parts) if streams else None), target  # type: ignore[arg-type]


def target_stream(
    cfg: Config,
    data: DomainData,
    seed: int,
    device: torch.device,
    first: int,
    rows: tuple[int, int],
    share: int,
    ratio: int,
) -> Batches:
    """The target's batch stream from micro-batch ``first``: ``ratio`` (``methods.base.target_ratio``) ×
    ``train.batch_size`` rows per step, of which this process reads ``ratio`` × its ``rows`` of the global batch."""
    lo, hi = rows
    return step_batches(
        data.target_train, cfg.train.batch_size * ratio, seed, device, first, cfg.data.augment, False,
        (lo * ratio, hi * ratio), share, cfg.data.invert,
    )  # fmt: skip


def keep_stage_checkpoint(run_dir: Path, name: str) -> None:
    """Copy the checkpoint just written at the end of stage ``name`` to ``checkpoints/<name>.pt`` (atomically), so
    each stage's model stays loadable once later stages have trained: ``load_run(run, "checkpoints/<name>.pt")``."""
    atomic_write_bytes(run_dir / stage_checkpoint(name), (run_dir / LAST_CHECKPOINT).read_bytes())


def stage_checkpoint(name: str) -> str:
    """Where the checkpoint of the end of stage ``name`` is kept, inside a run directory."""
    return str(Path(LAST_CHECKPOINT).with_name(f"{name}.pt"))
