"""``dann tune``: methods × λ_adv × learning rate, chosen without target labels.

The source-only control trains first, then every grid point, each an ordinary run directory ``out/runs/<name>``
(same data, steps and seed). A run's score is ``selection.validator`` at its last evaluation (the checkpoint dann
recommends within a run). It is eligible when that score is finite and its source held-out accuracy there is at most
``guard`` points below the control's (the collapse guard). The eligible run with the highest score is chosen, the
control included (ties go to the earlier run, the control first); with no eligible adapted run, the control. Target
labels only fill a marked column and name the run they *would* have picked.

Method strings: a method, then regularizers after ``+`` (``dann+mcc``: ``method.name=dann``, ``regularizers={mcc:
1.0}``; ``dann+entropy:0.1`` gives a weight). ``shot`` starts from the control (``model.init_from``), with the
control's network (``model.bottleneck_dim``). The same arguments again continue a killed tune: finished runs are
reused, an unfinished one resumes from its checkpoint. Another ``guard`` or ``selection.validator`` only re-ranks the
runs (every validator is in each ``metrics.jsonl``)."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import api
from ..config import Config, replace
from ..data import DomainData
from ..errors import CheckpointError, ConfigError, DivergedError, RunDirError
from ..methods import METHODS, REGULARIZERS, create_method
from ..plan import build_run_data, network_model
from ..reporting.pages import Section, Table, to_markdown
from ..runs import LAST_CHECKPOINT, METRICS_FILE, PREV_CHECKPOINT, atomic_write_text, load_checkpoint, read_jsonl
from ..training.feedback import format_duration
from ..training.nonfinite import ADVICE
from .defaults import DEFAULT_GUARD, DEFAULT_LAMBDAS, DEFAULT_METHODS
from .validators import CONFIDENCE_VALIDATORS, CONFIDENT_TERMS, check_validator

CONTROL = "source_only"
TUNE_JSON, TUNE_MD, COMPARE_HTML, RUNS = "tune.json", "tune.md", "compare.html", "runs"
ORACLE_NOTE = "uses target labels, not used for the choice"


@dataclass(frozen=True)
class GridPoint:
    name: str  # its run directory is out/runs/<name>
    cfg: Config


@dataclass
class TuneResult:
    """What ``tune`` returns: one row per run (the source-only control first), the run chosen by ``validator``
    without target labels and why, and, marked as using target labels, the run they would have picked."""

    out: Path
    validator: str
    rows: list[dict[str, Any]]  # the control first, then the grid in order; as in tune.json
    chosen: str  # a run name: its directory is out/runs/<chosen>
    why: str
    oracle_pick: str | None  # the run target labels would have picked (uses target labels; not the choice)
    target: str = ""  # data.target, for the predict command
    caution: str | None = None  # when the chosen run trains toward what the validator rewards

    @property
    def chosen_dir(self) -> Path:
        return self.out / RUNS / self.chosen

    def predict_command(self) -> str:
        flag = "--images" if self.target and not self.target.endswith(".npz") else "--data"
        return f"dann predict --run {self.chosen_dir} {flag} {self.target or 'TARGET.npz'} --out predictions.csv"

    def summary(self) -> str:
        lines = [f"chosen: {self.chosen_dir}  ({self.why})", f"use it: {self.predict_command()}"]
        lines += [f"caution: {self.caution}"] if self.caution else []
        if self.oracle_pick is not None:
            lines.append(f"target labels would have picked: {self.oracle_pick}  [{ORACLE_NOTE}]")
        files = ", ".join(str(self.out / f) for f in (TUNE_JSON, TUNE_MD, COMPARE_HTML))
        return "\n".join([*lines, f"wrote {files}"])


def parse_method(spec: str) -> tuple[str, dict[str, float]]:
    """``"dann+mcc"`` → ``("dann", {"mcc": 1.0})``; ``"dann+entropy:0.1"`` → ``("dann", {"entropy": 0.1})``."""
    name, *extras = spec.split("+")
    METHODS.get(name)  # an unknown name lists the valid ones
    regularizers = {}
    for extra in extras:
        key, _, weight = extra.partition(":")
        REGULARIZERS.get(key)
        try:
            regularizers[key] = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(f"method {spec!r}: the weight of {key!r} must be a number, got {weight!r}") from None
    return name, regularizers


def grid_points(
    cfg: Config, out: Path, methods: Sequence[str], lambdas: Sequence[float], lrs: Sequence[float]
) -> list[GridPoint]:
    """The control, then one ``GridPoint`` per method × λ_adv × lr, each config checked before anything trains."""
    if not (methods and lambdas and lrs):
        raise ConfigError("tune needs at least one method, one λ_adv (`lambdas`) and one lr (`lrs`)")
    control = GridPoint(CONTROL, replace(cfg, method={"name": CONTROL, "regularizers": {}}))
    points = [control]
    for spec in methods:
        name, regularizers = parse_method(spec)
        if name == CONTROL:
            raise ConfigError(f"{CONTROL} is the control, trained once anyway: leave it out of the methods")
        for lam in lambdas:
            for lr in lrs:
                method = {"name": name, "lambda_adv": lam, "regularizers": regularizers}
                values: dict[str, dict[str, Any]] = {"method": method, "optim": {"lr": lr}}
                if METHODS.get(name).needs_init:  # shot: adapt the control's trained model
                    values["model"] = {"init_from": str((out / RUNS / CONTROL).resolve())}
                point = GridPoint(f"{spec.replace(':', '')}-l{lam:g}-lr{lr:g}", replace(cfg, **values))
                create_method(point.cfg.method)  # a bad combination (e.g. mcc+mcc) fails now
                points.append(point)
    names = [p.name for p in points]
    if len(set(names)) < len(names):
        raise ConfigError(f"the grid repeats a point: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return points


def matched_control(points: list[GridPoint], data: DomainData) -> list[GridPoint]:
    """The control (``points[0]``) on the candidates' network: with ``model.bottleneck_dim`` left to auto, every
    adaptation method has its references' bottleneck and source-only none, so the control takes the candidates'
    width (when they share one), and a gain of the bottleneck is never credited to adaptation."""
    control = points[0]
    if control.cfg.model.bottleneck_dim is not None:
        return points
    widths = {network_model(p.cfg.model, p.cfg.method, data.input_shape).bottleneck_dim for p in points[1:]}
    if len(widths) != 1:
        return points
    matched = GridPoint(control.name, replace(control.cfg, model={"bottleneck_dim": widths.pop()}))
    return [matched, *points[1:]]


def control_layout(point: GridPoint, control: GridPoint, data: DomainData) -> GridPoint:
    """A point that starts from the control (shot) with ``model.bottleneck_dim`` left to auto gets the control's
    bottleneck, so the control's weights fit its network (under auto each method has its reference layout)."""
    if not point.cfg.model.init_from or point.cfg.model.bottleneck_dim is not None:
        return point
    dim = network_model(control.cfg.model, control.cfg.method, data.input_shape).bottleneck_dim
    return GridPoint(point.name, replace(point.cfg, model={"bottleneck_dim": dim}))


def _fingerprint(data: DomainData) -> dict[str, Any]:
    parts = ("source_train", "source_val", "target_train", "target_eval")
    sizes = {k: len(getattr(data, k)) for k in parts if getattr(data, k) is not None}
    return {"classes": list(data.classes), "input_shape": list(data.input_shape), "sizes": sizes}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    return {k: v for key, value in d.items() for k, v in _flat(value, f"{prefix}.{key}".lstrip(".")).items()}


def _start(out: Path, spec: dict[str, Any], overwrite: bool) -> None:
    """Create ``out`` with ``tune.json`` holding the grid, config and data; or check that an existing tune folder
    holds the same ones (then it continues). Anything else in the way is refused unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} exists and is not a folder; choose another `out`")
    if overwrite and out.exists():
        shutil.rmtree(out)
    saved = out / TUNE_JSON
    if out.is_dir() and any(out.iterdir()):
        try:
            old = {k: json.loads(saved.read_text())[k] for k in spec}
        except (OSError, ValueError, KeyError, TypeError):
            raise RunDirError(
                f"{out} exists and is not a tune folder (no readable {TUNE_JSON}); choose another `out`, or pass "
                "`overwrite=True` to delete it"
            ) from None
        new, old = _flat(spec), _flat(old)
        changed = [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in sorted({*new, *old}) if old.get(k) != new.get(k)]
        if changed:
            raise RunDirError(
                f"{out} holds a tune with another grid, config or data ({'; '.join(changed[:3])}); rerun with the same "
                "arguments to continue it, pass `overwrite=True` to start over, or choose another `out`"
            )
        return
    atomic_write_text(saved, json.dumps({**spec, "status": "running"}, indent=1) + "\n")


def _train(point: GridPoint, run_dir: Path, data: DomainData) -> tuple[list[dict[str, Any]], bool, str | None]:
    """The run's evaluation records: reused when it finished, resumed from its checkpoint when it has one, else
    trained afresh (replacing what a kill before its first checkpoint left). Returns (records, reused, why training
    stopped early: a non-finite loss, else None)."""
    steps, history = point.cfg.train.steps, read_jsonl(run_dir / METRICS_FILE)
    if history and history[-1].get("step") == steps:
        try:
            if load_checkpoint(run_dir / LAST_CHECKPOINT).step == steps:
                return history, True, None
        except CheckpointError:
            pass  # torn while it was written: resume falls back to prev.pt
    try:
        if any((run_dir / name).is_file() for name in (LAST_CHECKPOINT, PREV_CHECKPOINT)):
            api.fit(out=run_dir, resume=True, data=data)
        else:
            api.fit(point.cfg, run_dir, data=data, overwrite=True)
    except DivergedError as e:  # the grid point's fault, not the tune's: record it and go on
        return read_jsonl(run_dir / METRICS_FILE), False, str(e).split(";")[0]
    return read_jsonl(run_dir / METRICS_FILE), False, None


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _row(point: GridPoint, history: list[dict[str, Any]], validator: str, failed: str | None) -> dict[str, Any]:
    last, m = (history or [{}])[-1], point.cfg.method
    score = last.get("validators", {}).get(validator)
    target = last.get("oracle", {}).get("target_acc")
    return {
        "name": point.name,
        "run_dir": f"{RUNS}/{point.name}",
        "method": m.name,
        "regularizers": dict(m.regularizers),
        "lambda_adv": None if m.name == CONTROL else m.lambda_adv,
        "lr": point.cfg.optim.lr,
        "step": last.get("step"),
        "score": score if _finite(score) else None,  # JSON has no NaN: a non-finite score is kept as a word
        "score_problem": None if _finite(score) else "missing" if score is None else f"not finite ({score})",
        "source_val_acc": last.get("source_val", {}).get("acc"),
        "oracle": None if target is None else {"target_acc": target, "note": ORACLE_NOTE},
        "failed": failed,
    }


def _eligibility(
    row: dict[str, Any], control: dict[str, Any], guard: float, validator: str, steps: int, held_out: int = 0
) -> tuple[bool, str]:
    """(eligible, reason) of one row against the control's row; reads no target label. With ``held_out`` samples
    (> 0) a drop of one sample is never a collapse, even where one sample is more than ``guard`` points."""
    acc, base = row["source_val_acc"], control["source_val_acc"]
    if row["failed"]:
        return False, f"training stopped: {row['failed']}"
    if row["step"] != steps:
        return False, f"unfinished: its last evaluation is at step {row['step']}"
    if row["score"] is None:
        return False, f"`{validator}` score {row['score_problem']} at the last evaluation"
    if row is control:
        return True, "the source-only control"
    if not (_finite(acc) and _finite(base)):
        return False, "no source held-out accuracy to guard against collapse"
    drop, one = 100 * (base - acc), 100 / held_out if held_out else 0.0
    if drop > guard + 1e-9 and drop > one + 1e-9:  # the tolerance keeps a drop of exactly the guard eligible
        sample = f" and one of {held_out} held-out samples, {one:.1f} points" if held_out else ""
        return False, (
            f"collapse guard: source held-out {100 * acc:.1f}% is {drop:.1f} points below the control's "
            f"{100 * base:.1f}% (more than {guard:g}{sample})"
        )
    return True, f"source held-out within {max(guard, one):.3g} points of the control"


def guard_note(guard: float, held_out: int) -> str | None:
    """A warning when one held-out sample is worth more than ``guard`` points: the guard then counts samples."""
    one = 100 / held_out if held_out else 0.0
    if one <= guard:
        return None
    return (
        f"the source held-out split has {held_out} samples: one is {one:.1f} points, more than the {guard:g}-point "
        "guard, so the guard excludes a run only for more than one sample (a larger data.val_fraction resolves finer)"
    )


def judge(rows: list[dict[str, Any]], guard: float, validator: str, steps: int, held_out: int = 0) -> None:
    """Set ``eligible``, ``reason`` and ``rank`` of every row (``rows[0]`` is the control); reads no target label.
    ``held_out``: the number of held-out source samples (a drop of one of them is within the guard)."""
    for row in rows:
        row["eligible"], row["reason"] = _eligibility(row, rows[0], guard, validator, steps, held_out)
    ranked = sorted((r for r in rows if r["eligible"]), key=lambda r: -r["score"])  # stable: ties keep grid order
    rank = {r["name"]: i for i, r in enumerate(ranked, 1)}
    for row in rows:
        row["rank"] = rank.get(row["name"])


def choose(rows: list[dict[str, Any]], validator: str) -> tuple[str, str]:
    """(chosen run name, why) from judged rows; the control when no adapted run is eligible."""
    ranked = sorted((r for r in rows if r["rank"] is not None), key=lambda r: r["rank"])
    adapted = [r for r in ranked if r is not rows[0]]
    if not adapted:
        return rows[0]["name"], "no adapted run is eligible (see the reasons in tune.md): the source-only control"
    if ranked[0] is rows[0]:
        return rows[0]["name"], f"the source-only control scores highest by `{validator}`: adaptation did not help"
    return ranked[0]["name"], f"highest `{validator}` among runs within the guard of the control"


def caution(row: dict[str, Any], validator: str) -> str | None:
    """A warning when ``row``'s method or regularizers optimize what ``validator`` measures, else None."""
    terms = sorted(CONFIDENT_TERMS & {row["method"], *row["regularizers"]})
    if not terms or validator not in CONFIDENCE_VALIDATORS:
        return None
    return (
        f"{' and '.join(terms)} train{'s' * (len(terms) == 1)} the target predictions to be confident (and diverse), "
        f"which `{validator}` rewards, so the score is inflated against other methods'; weigh it against the best run "
        "of another method, or rerun with selection.validator=NAME (the runs are reused, only re-ranked)"
    )


def plan_line(points: Sequence[GridPoint], out: Path) -> str:
    """What a tune will train, said before it starts: the count, the steps and each run's name, in order."""
    steps = {p.cfg.train.steps for p in points}
    each = f"{steps.pop()} steps each" if len(steps) == 1 else "steps as configured"
    names = ", ".join(p.name for p in points)
    return f"{len(points)} runs ({each}), one after another, into {out / RUNS}: {names}"


def time_left(seconds: Sequence[float], left: int) -> str:
    """``; about 12 min left`` from the mean time of the runs trained so far, or ``""`` when none is left or none
    was timed (every run so far reused). An adaptation step costs more than a source-only one, so the first
    estimate, from the control alone, is low: it is refreshed after every run."""
    if not left or not seconds:
        return ""
    return f"; about {format_duration(left * sum(seconds) / len(seconds))} left for {left} run{'s' * (left != 1)}"


def _line(k: int, rows: list[dict[str, Any]], total: int, validator: str, reused: bool) -> str:
    row, fmt = rows[-1], (lambda x: "–" if x is None else f"{x:.4f}")
    best = min((r for r in rows if r["rank"] is not None), key=lambda r: r["rank"], default=None)
    acc = "–" if row["source_val_acc"] is None else f"{100 * row['source_val_acc']:.1f}%"
    so_far = f"{best['name']} {fmt(best['score'])}" if best else "none eligible"
    text = f"[{k}/{total}] {row['name']}: {validator} {fmt(row['score'])}, source held-out {acc}"
    tail = ("" if row["eligible"] else f"; not eligible: {row['reason']}") + ", already trained" * reused
    return f"{text} (best so far: {so_far}){tail}"


def _markdown(result: TuneResult, guard: float, held_out: int = 0) -> str:
    v, pct = result.validator, (lambda x: "–" if x is None else f"{100 * x:.1f}%")
    header = ["rank", "run", "method", "regularizers", "λ_adv", "lr", f"`{v}` (last evaluation)"]
    header += ["source held-out acc", "eligible", "reason", f"target acc ({ORACLE_NOTE})"]
    body = []
    for r in sorted(result.rows, key=lambda r: (r["rank"] is None, r["rank"] or 0)):
        regs = ", ".join(f"{k} {w:g}" for k, w in r["regularizers"].items()) or "–"
        lam, score = "–" if r["lambda_adv"] is None else f"{r['lambda_adv']:g}", r["score"]
        cells = [str(r["rank"] or "–"), f"`{r['run_dir']}`", r["method"], regs, lam, f"{r['lr']:g}"]
        cells += ["–" if score is None else f"{score:.4f}", pct(r["source_val_acc"]), "yes" if r["eligible"] else "no"]
        body.append([*cells, r["reason"], pct((r["oracle"] or {}).get("target_acc"))])
    answer = [
        f"**Chosen: `{result.chosen_dir}`**: {result.why}. Use it: `{result.predict_command()}`.",
        f"The rule (no target labels): each run's `{v}` score at its last evaluation; a run is eligible when that "
        f"score is finite and its source held-out accuracy is at most {guard:g} points (or one held-out sample) "
        "below the source-only control's; the eligible run with the highest score is chosen, else the control.",
    ]
    note = guard_note(guard, held_out)
    answer += [f"**Note**: {note}."] if note else []
    answer += [f"**Caution**: {result.caution}."] if result.caution else []
    if result.oracle_pick is not None:
        answer.append(f"Target labels would have picked `{result.oracle_pick}` ({ORACLE_NOTE}).")
    answer.append(f"`{COMPARE_HTML}`: the same runs side by side with curves; it ranks each run's `best.pt` step.")
    return to_markdown("dann tune", [Section("Answer", answer), Section("Ranking", [Table(header, body)])], "")


def _write(result: TuneResult, spec: dict[str, Any], guard: float, data: DomainData) -> None:
    """``compare.html`` (``dann compare`` over every run, noise bands on ``data``), ``tune.md``, then ``tune.json``
    marked done."""
    out, rows = result.out, result.rows
    evaluated = [out / r["run_dir"] for r in rows if r["step"] is not None]  # a run may stop before its first
    api.compare(evaluated, out / COMPARE_HTML, result.validator, data, overwrite=True)  # rebuilt with tune.md
    atomic_write_text(out / TUNE_MD, _markdown(result, guard, len(data.source_val) if data.source_val else 0))
    oracle = None if result.oracle_pick is None else {"name": result.oracle_pick, "note": ORACLE_NOTE}
    chosen = {"name": result.chosen, "run_dir": f"{RUNS}/{result.chosen}", "why": result.why}
    record = {**spec, "status": "done", "validator": result.validator, "guard": guard, "control": CONTROL}
    record |= {"chosen": chosen, "caution": result.caution, "oracle_pick": oracle, "rows": rows}
    atomic_write_text(out / TUNE_JSON, json.dumps(record, indent=1) + "\n")


def tune(
    cfg: Config,
    out: str | Path,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    lrs: Sequence[float] | None = None,
    guard: float = DEFAULT_GUARD,
    data: DomainData | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TuneResult:
    """Train the source-only control and every point of ``methods`` × ``lambdas`` (λ_adv) × ``lrs`` (default:
    ``cfg.optim.lr``) under ``out/runs/``, then choose without target labels (see the module's docstring). ``data``
    overrides ``cfg.data`` as in ``fit``. Writes ``tune.json``, ``tune.md`` and ``compare.html`` into ``out``. Run
    again with the same arguments (``guard`` and ``selection.validator`` may change), it continues a killed tune;
    with others it refuses, unless ``overwrite`` (which deletes ``out`` first). With ``progress``: one line per run
    as it finishes."""
    if not (_finite(guard) and guard >= 0):
        raise ConfigError(f"guard must be a number of percentage points >= 0, got {guard!r}")
    out, cfg = Path(out), replace(cfg, train={"progress": False})
    grid = {"methods": list(methods), "lambdas": [float(x) for x in lambdas]}
    grid["lrs"] = [float(x) for x in ((cfg.optim.lr,) if lrs is None else lrs)]
    points = grid_points(cfg, out, grid["methods"], grid["lambdas"], grid["lrs"])
    data = build_run_data(cfg.data, cfg.model) if data is None else data
    points = matched_control(points, data)
    points = [control_layout(point, points[0], data) for point in points]
    if data.source_val is None:
        raise ConfigError("tune's collapse guard needs a labeled source held-out set: set data.val_fraction > 0")
    validator = cfg.selection.validator
    check_validator(validator, has_source_val=True)
    config = cfg.to_dict()
    del config["selection"]["validator"]  # judging only: a rerun with another one re-ranks the same runs
    spec = json.loads(json.dumps({"grid": grid, "config": config, "data": _fingerprint(data)}))
    _start(out, spec, overwrite)
    if progress:
        print(f"tune: {plan_line(points, out)}", flush=True)
        if note := guard_note(guard, len(data.source_val)):
            print(f"tune: {note}", flush=True)
    rows: list[dict[str, Any]] = []
    seconds: list[float] = []  # of each run trained here (not those reused), for the time left
    for k, point in enumerate(points, 1):
        tic = time.perf_counter()
        history, reused, failed = _train(point, out / RUNS / point.name, data)
        if not reused:
            seconds.append(time.perf_counter() - tic)
        if failed and point is points[0]:
            raise DivergedError(f"the source-only control stopped ({failed}): the guard needs it; {ADVICE}")
        rows.append(_row(point, history, validator, failed))
        judge(rows, guard, validator, cfg.train.steps, len(data.source_val))
        if progress:
            print(_line(k, rows, len(points), validator, reused) + time_left(seconds, len(points) - k), flush=True)
    chosen, why = choose(rows, validator)
    labeled = [r for r in rows if r["oracle"] is not None]
    oracle = max(labeled, key=lambda r: r["oracle"]["target_acc"])["name"] if labeled else None
    warning = caution(next(r for r in rows if r["name"] == chosen), validator)
    result = TuneResult(out, validator, rows, chosen, why, oracle, cfg.data.target, warning)
    _write(result, spec, guard, data)
    return result
