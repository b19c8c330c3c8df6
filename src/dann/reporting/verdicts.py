"""Verdicts that know their noise: sanity flags of a run, the ranking of runs by a validator with noise bands, and the
answer to "did adaptation help?" from a run and its source-only control. No target labels decide anything here;
target accuracy, where there is some, is shown beside the verdict and marked."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import CONTROL_METHOD
from ..data import DomainData
from ..data.fingerprint import DATA_FILE, describe_target, domain_fingerprint, read_data_fingerprint
from ..errors import DannError, DataWarning, RunDirError
from ..evaluation.loading import Progress
from ..plan import build_run_data
from ..runs import BEST_CHECKPOINT, LAST_CHECKPOINT, load_checkpoint
from ..selection.bands import Band, checkpoint_band
from ..selection.validators import CONFIDENCE_VALIDATORS, CONFIDENT_TERMS
from .summary import RunSummary

CHANCE_MARGIN = 0.1  # "near chance": within this fraction of the way from chance (1/K) to perfect accuracy
PINNED_ACC, PINNED_EVALS = 0.95, 3  # the discriminator's accuracy at least this at the last evaluations (2 at least)
A_DISTANCE_RISE = 0.1  # a rise of the proxy A-distance larger than its typical noise on a few hundred samples
USES_LABELS = "uses target labels"
CONTROL_DIR = "control"  # where `dann train --control` puts the source-only control, inside the run directory


@dataclass(frozen=True)
class Flag:
    """Something in a run that makes its numbers suspect: ``name`` (a key), what was seen and what it means
    (``what``), and what to try (``advice``)."""

    name: str
    what: str
    advice: str

    def __str__(self) -> str:
        return f"{self.what} Try: {self.advice}"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "what": self.what, "advice": self.advice}


def progress(run: RunSummary) -> Progress:
    """How far the run's last checkpoint (the last record of ``metrics.jsonl``) got."""
    step = int(run.last["step"])
    return Progress(step, step, run.config.train.steps)


def _unfinished(run: RunSummary) -> Flag | None:
    done = progress(run)
    if done.finished:
        return None
    return Flag(
        "unfinished",
        f"Training is unfinished: the last checkpoint is at {done}. Every number here describes a model still in "
        "training (still running, killed, or stopped by a non-finite loss).",
        f"let it finish, or continue it with `dann train --out {run.run_dir} --resume`.",
    )


def _chance(run: RunSummary, num_classes: int | None) -> Flag | None:
    acc = run.last.get("source_val", {}).get("acc")
    if acc is None or not num_classes:
        return None
    chance = 1 / num_classes
    if acc > chance + CHANCE_MARGIN * (1 - chance):
        return None
    return Flag(
        "chance",
        f"Source held-out accuracy is {100 * acc:.1f}%, near chance (1/{num_classes} = {100 * chance:.1f}%): the "
        "classifier has not learned the labeled source task, so neither adaptation nor the validators mean anything.",
        "check the source labels; train longer (train.steps) or with another optim.lr; start from pretrained weights "
        "(model.pretrained=true) or use a smaller backbone for a small data set; compare with the source-only "
        "control (`--control`).",
    )


def _adversary_lost(run: RunSummary) -> Flag | None:
    accs = [r["train"]["domain_acc"] for r in run.history if "domain_acc" in r.get("train", {})][-PINNED_EVALS:]
    if len(accs) < 2 or min(accs) < PINNED_ACC:
        return None
    shown = ", ".join(f"{a:.2f}" for a in accs)
    return Flag(
        "adversary_lost",
        f"The domain discriminator's accuracy stayed near 1.0 over the last {len(accs)} evaluations ({shown}): the "
        "adversary lost, the features still tell source from target, and no alignment is happening.",
        "raise method.lambda_adv (or method.grl_hi), lower optim.lr, give the discriminator fewer units "
        "(model.discriminator_dims); if the domains barely share anything, adaptation may not be possible.",
    )


def _a_distance_rising(run: RunSummary, a_distance: dict[str, float] | None) -> Flag | None:
    pad = a_distance or {}
    start, end = pad.get("initialization"), pad.get("last")
    if run.config.method.name == CONTROL_METHOD or start is None or end is None or end <= start + A_DISTANCE_RISE:
        return None
    return Flag(
        "a_distance_rising",
        f"The proxy A-distance rose from {start:.2f} at initialization to {end:.2f} at the last checkpoint: "
        "training made the features easier to tell apart by domain, the opposite of what adaptation aims for.",
        "raise method.lambda_adv, check that the discriminator is not losing (its accuracy in the curves), and "
        "compare with the source-only control (`--control`): if its distance rises as much, the method is not "
        "aligning.",
    )


def run_flags(run: RunSummary, num_classes: int | None, a_distance: dict[str, float] | None = None) -> list[Flag]:
    """The sanity flags of a run: unfinished; source held-out accuracy within ``CHANCE_MARGIN`` of the way from
    chance (1/``num_classes``) to perfect; the discriminator's accuracy at least ``PINNED_ACC`` at each of the last
    ``PINNED_EVALS`` evaluations (2 at least); the proxy A-distance of the last checkpoint more than
    ``A_DISTANCE_RISE`` above the initialization's (adaptation methods only)."""
    found = (_unfinished(run), _chance(run, num_classes), _adversary_lost(run), _a_distance_rising(run, a_distance))
    return [f for f in found if f is not None]


def _named(name: str, band: Band) -> str:
    return f"`{name}` {band}"


def ranking(bands: dict[str, Band], problems: dict[str, str], validator: str) -> str:
    """The choice among runs by ``validator``, no target labels: the highest score, named only when its noise band
    clears every other run's; "no clear difference" when bands overlap; no choice when a band is missing
    (``problems``: run → why)."""
    if problems:
        why = "; ".join(f"`{run}`: {problem}" for run, problem in problems.items())
        return (
            f"**No choice**: without a noise band for every run ({why}), the `{validator}` scores alone cannot say "
            "whether one run beats another."
        )
    if len(bands) < 2:
        return "One run: nothing to rank."
    order = sorted(bands, key=lambda name: bands[name].score, reverse=True)
    best = order[0]
    close = [name for name in order[1:] if bands[name].overlaps(bands[best])]
    if close:
        listed = ", ".join(_named(name, bands[name]) for name in [best, *close])
        return (
            f"**No clear difference** by `{validator}` (no target labels) between {listed}: their 95 % noise bands "
            "overlap, so another draw of target samples could reverse the order. Choose on other grounds (source "
            "held-out accuracy, the sanity flags, simplicity), or score more target samples where the target has more "
            "(selection.max_samples)."
        )
    return (
        f"Highest `{validator}` score, the choice without target labels: **{_named(best, bands[best])}**, clear of "
        "every other run's 95 % noise band."
    )


def _difference(run: Band, control: Band, validator: str) -> str:
    both = f"{run} for this run, {control} for the source-only control"
    if run.overlaps(control):
        return f"**No clear difference** by `{validator}` (no target labels): {both}; the 95 % noise bands overlap."
    if run.score > control.score:
        return f"**Yes**, by `{validator}` (no target labels): {both}; the 95 % noise bands do not overlap."
    return f"**No**, by `{validator}` (no target labels): the control scores higher: {both}; the bands do not overlap."


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "–"


def control_verdict(
    run: RunSummary, control: RunSummary, bands: tuple[Band | None, Band | None], problem: str
) -> tuple[list[str], dict[str, Any]]:
    """ "Did adaptation help?" from ``run`` and its source-only ``control``, both at their last checkpoint, by the
    run's validator with noise bands (``bands``: run's, control's; ``problem``: why one is missing); then source
    held-out accuracy, and target accuracy when both runs have some (marked: uses target labels). Returns the text
    blocks and a summary for ``report.json``."""
    validator, (mine, theirs) = run.validator, bands
    if mine is None or theirs is None:
        blocks = [f"**Cannot tell** by `{validator}`: no noise band ({problem}), so the scores alone cannot say it."]
        answer = "unknown"
    else:
        blocks = [_difference(mine, theirs, validator)]
        answer = "no clear difference" if mine.overlaps(theirs) else "yes" if mine.score > theirs.score else "no"
    src = [r.last.get("source_val", {}).get("acc") for r in (run, control)]
    line = f"Source held-out accuracy: {_pct(src[0])} for this run, {_pct(src[1])} for the control"
    if None not in src:
        line += f" ({100 * (src[0] - src[1]):+.1f} points; a large drop means adaptation cost source accuracy)"
    blocks.append(line + ".")
    terms = sorted(CONFIDENT_TERMS & {run.config.method.name, *run.config.method.regularizers})
    if terms and validator in CONFIDENCE_VALIDATORS:
        blocks.append(
            f"Caution: {' and '.join(terms)} train the target predictions to be confident, which `{validator}` "
            "rewards: the score favours this run over the control by construction. Prefer another validator "
            "(`dann report` reads selection.validator; `dann compare --validator NAME`)."
        )
    targets = [r.last.get("oracle", {}).get("target_acc") for r in (run, control)]
    if None not in targets:
        blocks.append(
            f"With target labels ({USES_LABELS}; evaluation only, never used above): target accuracy "
            f"{_pct(targets[0])} for this run, {_pct(targets[1])} for the control "
            f"({100 * (targets[0] - targets[1]):+.1f} points)."
        )
    summary = {
        "control": str(control.run_dir),
        "validator": validator,
        "answer": answer,
        "bands": {"run": mine.to_dict() if mine else None, "control": theirs.to_dict() if theirs else None},
        "problem": problem or None,
        "target_acc": {"run": targets[0], "control": targets[1], "note": USES_LABELS},
    }
    return blocks, summary


def num_classes(run_dir: Path) -> int | None:
    """The number of classes of a run: from its ``data.json``, else its last checkpoint (None if neither reads)."""
    record = read_data_fingerprint(run_dir)
    if record is not None and record.get("classes"):
        return len(record["classes"])
    try:
        return len(load_checkpoint(run_dir / LAST_CHECKPOINT).meta["classes"])
    except DannError:
        return None


def check_targets(runs: list[RunSummary], different_targets: bool = False) -> bool:
    """Whether the runs' scores can rank them: True unless their records (``data.json``) show different target data;
    a run without the record gets a warning (its target cannot be checked). Runs that adapted to different target
    data raise ``RunDirError``, or with ``different_targets`` get a warning (and False: they are not to be ranked)."""
    records = {r.run_dir: read_data_fingerprint(r.run_dir) for r in runs}
    missing = [str(d) for d, record in records.items() if record is None]
    if missing:
        warnings.warn(
            f"{', '.join(missing)}: no record of the target data ({DATA_FILE}; runs trained before dann kept it), so "
            "compare cannot check that every run adapted to the same target data",
            DataWarning,
            stacklevel=3,
        )
    known = {d: record for d, record in records.items() if record is not None}
    digests = {record["target_train"]["sha256"] for record in known.values()}
    if len(digests) <= 1:
        return True
    listed = "; ".join(f"{d}: {describe_target(record)}" for d, record in known.items())
    if not different_targets:
        raise RunDirError(
            f"cannot rank runs that adapted to different target data ({listed}): each validator score is computed on "
            "its run's own target samples, so scores on different targets do not compare. Compare runs of one target, "
            "or pass `different_targets=True` to see them side by side, unranked"
        )
    warnings.warn(
        f"the runs adapted to different target data ({listed}); they are shown side by side but not ranked",
        DataWarning,
        stacklevel=3,
    )
    return False


def _kept_checkpoint(run: RunSummary, validator: str) -> str | None:
    """The checkpoint file holding the step ``validator`` selects in ``run``: ``best.pt`` when the run's own
    selection chose that step, ``last.pt`` when it is the last step; None when that step was not kept."""
    step, chosen = run.selected["step"], run.last.get("selection") or {}
    if chosen.get("validator") == validator and chosen.get("step") == step:
        return BEST_CHECKPOINT
    return LAST_CHECKPOINT if step == run.last["step"] else None


def _data_for(run: RunSummary, cache: dict[str, DomainData | str]) -> DomainData | str:
    """The data ``run`` trained on, rebuilt from its config (one build per distinct data config), or why not."""
    cfg = run.config
    key = repr((cfg.data, cfg.model))  # frozen dataclasses: equal configs, equal reprs
    if key not in cache:
        try:
            cache[key] = build_run_data(cfg.data, cfg.model)
        except DannError as e:
            cache[key] = f"its data could not be loaded ({' '.join(str(e).split())})"
    return cache[key]


def run_bands(
    runs: list[RunSummary], validator: str, data: DomainData | None = None
) -> tuple[dict[str, Band], dict[str, str]]:
    """The noise band of each run's selected checkpoint by ``validator`` (``checkpoint_band``), on ``data`` or the
    data each run's config names; ({run: band}, {run: why it has none}). A run whose data no longer matches its
    ``data.json`` record gets no band (its score would be another's)."""
    bands, problems, cache = {}, {}, {}
    for run in runs:
        name = str(run.run_dir)
        checkpoint = _kept_checkpoint(run, validator) if run.selected else None
        domains = data if data is not None else _data_for(run, cache)
        record = read_data_fingerprint(run.run_dir)
        if run.selected is None:
            problems[name] = f"no `{validator}` score"
        elif checkpoint is None:
            problems[name] = f"the checkpoint of step {run.selected['step']} is not kept"
        elif isinstance(domains, str):
            problems[name] = domains
        elif (
            record is not None
            and domain_fingerprint(domains.target_train)["sha256"] != record["target_train"]["sha256"]
        ):
            problems[name] = "its target data is not the data it trained on (changed since, or other data given)"
        else:
            band, problem = checkpoint_band(run.run_dir, checkpoint, validator, domains)
            if band is None:
                problems[name] = problem
            else:
                bands[name] = band
    return bands, problems
