"""The selecting default: with no method named, ``dann.fit`` (and ``dann train``, ``DANNClassifier()``) trains the
source-only control and the candidates of ``config.SELECTION`` on the user's data, each an ordinary run directory,
and keeps the run that the rule of ``dann.selection.choice`` picks, without target labels.

Layout of ``out`` (the run the user predicts with is ``out`` itself, as for any run)::

    out/control/                  the source-only control (same data, seed, steps and network as the candidates)
    out/candidates/<name>/        each candidate, e.g. adamatch_noda, iwdan
    out/default.json              the plan while it trains ("state": "selecting"), then what was kept and why
    out/config.yaml, metrics.jsonl, train.jsonl, data.json, checkpoints/   the kept run's files (linked or copied)

An interrupted selection continues with ``resume=True`` (``dann train --out OUT --resume``): finished runs are kept,
an unfinished one resumes from its checkpoint, and the rule runs again on the finished runs. Without ``out`` the runs
go to a temporary folder that is deleted afterwards."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import SELECTION, Config
from ..data import DomainData
from ..evaluation.loading import default_record
from ..runs import CONFIG_FILE, LAST_CHECKPOINT, METRICS_FILE, TRAIN_LOG_FILE
from .choice import CONTROL, Evidence

CANDIDATES_DIR = "candidates"
SELECTING, DONE = "selecting", "done"  # default.json's "state" while the runs train, and once one is kept
# with checkpoints/*.pt: what makes ``out`` the kept run
KEPT_FILES = (CONFIG_FILE, METRICS_FILE, TRAIN_LOG_FILE, "data.json")


def selection_configs(cfg: Config, input_shape: tuple[int, ...]) -> dict[str, Config]:
    """The runs of a selection: the control (``source_only``) and each candidate of ``SELECTION``, each ``cfg`` with
    its method (the candidate's method keys set, any other left as given) and no regularizers. The control trains on
    the candidates' network (the first candidate's bottleneck: the matched control of the suite's rule), so a
    difference of network is never credited to adaptation."""
    from ..plan import network_model

    def with_method(c: Config, **keys: Any) -> Config:
        return dataclasses.replace(c, method=dataclasses.replace(c.method, regularizers={}, **keys))

    candidates = {name: with_method(cfg, **keys) for name, keys in SELECTION["candidates"].items()}
    control = with_method(cfg, name="source_only")
    if cfg.train.precision == "auto":  # the candidates keep fp32 under auto (adversarial, AdaMatch): so does it
        control = dataclasses.replace(control, train=dataclasses.replace(control.train, precision="fp32"))
    if candidates:
        first = next(iter(candidates.values()))
        width = network_model(first.model, first.method, input_shape).bottleneck_dim
        control = dataclasses.replace(control, model=dataclasses.replace(control.model, bottleneck_dim=width))
    return {CONTROL: control, **candidates}


def where(root: Path, name: str) -> Path:
    from ..reporting.verdicts import CONTROL_DIR

    return root / CONTROL_DIR if name == CONTROL else root / CANDIDATES_DIR / name


def selection_state(out: str | Path | None) -> str | None:
    """``default.json``'s state in ``out`` (``SELECTING``, ``DONE``), or None when ``out`` holds no selection."""
    return (default_record(out) or {}).get("state") if out is not None else None


def cost_line(names: list[str]) -> str:
    return (
        f"default:  no method named, so dann trains {len(names)} runs on this data, the source-only control and "
        f"{', '.join(n for n in names if n != CONTROL)}, and keeps the one the selection rule picks without target "
        f"labels (AdaMatch costs about {SELECTION['relative_cost']['adamatch_noda']:g} source-only runs); "
        "--method NAME trains that method alone"
    )


def remaining_line(control_seconds: float, names: list[str]) -> str:
    """After the control: about how long the candidates will take, from its time and their relative costs."""
    cost = sum(SELECTION["relative_cost"].get(n, 1.0) for n in names)
    minutes = control_seconds * cost / 60
    return f"default:  the control took {control_seconds:.0f} s; the candidates take about {minutes:.0f} min more"


def total_estimate(
    echo: Callable[[str], None], say: Callable[[str], None], steps: int, candidates: list[str]
) -> Callable[[str], None]:
    """An ``echo`` for the control's run that passes every line on and follows its time estimate (after its first
    steps) with one for the whole selection: the control's steps, then the candidates' at their relative costs
    (``SELECTION["relative_cost"]``; evaluations excluded)."""
    from ..training.feedback import followed_by, format_duration

    cost = 1 + sum(SELECTION["relative_cost"].get(n, 1.0) for n in candidates)

    def whole(per_step: float) -> str:
        return (
            f"default:  so the selection takes about {format_duration(per_step * steps * cost)} in all: this "
            f"control, then {', '.join(candidates)} (about {cost - 1:g} control runs of compute)"
        )

    return followed_by(echo, say, whole)


def refuse_overridden(cfg: Config) -> None:
    """A ``ConfigError`` for method settings given with no method named that the selection would not train with:
    a key a candidate sets itself, or regularizers (the candidates train without them)."""
    from ..config import MethodConfig
    from ..errors import ConfigError

    plain = MethodConfig()
    given = sorted(
        {k for keys in SELECTION["candidates"].values() for k in keys if k != "name"}
        & {k for k in vars(plain) if getattr(cfg.method, k) != getattr(plain, k)}
    )
    if cfg.method.regularizers:
        given.append("regularizers")
    if given:
        keys = ", ".join(f"method.{k}" for k in given)
        raise ConfigError(
            f"{keys} given with no method named: the default's candidates train with their own, so it would be "
            "ignored; name the method to train it with this setting (e.g. --method adamatch)"
        )


def evidence(run_dir: Path, history: list[dict[str, Any]], data: DomainData, validator: str) -> Evidence:
    from .bands import checkpoint_band

    band, problem = checkpoint_band(run_dir, LAST_CHECKPOINT, validator, data)
    acc = history[-1].get("source_val", {}).get("acc") if history else None
    return Evidence(acc, band, problem)


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content, atomically: a hard link where the file system allows one, else a copy."""
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def adopt(root: Path, kept: Path) -> None:
    """Make ``root`` the run in ``kept``: its config, metrics, data record and every checkpoint."""
    (root / "checkpoints").mkdir(exist_ok=True)
    for old in (root / "checkpoints").glob("*.pt"):
        old.unlink()
    for name in KEPT_FILES:
        if (kept / name).is_file():
            _link_or_copy(kept / name, root / name)
    for pt in (kept / "checkpoints").glob("[!.]*.pt"):
        _link_or_copy(pt, root / "checkpoints" / pt.name)
