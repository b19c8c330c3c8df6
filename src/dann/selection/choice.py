"""The selecting default's rule: keep an adapted run only where it beats the source-only control on this data.

When no method is named, ``dann.fit`` trains the source-only control and the default's candidates
(``config.SELECTION``) on the user's data and keeps the run this rule picks (``benchmarks/suite.py``, "the selecting
default"; the fourth rule of the suite, with the validator's noise band on this data in place of the spread over
seeds):

a. a candidate is **eligible** unless its source held-out accuracy is below the control's by more than ``guard``
   points (1) *and* by more than one held-out sample (on 60 held-out samples one is 1.7 points: a finer guard would
   turn on a single sample);
b. it **clears** when its validator band (``class_ami``, 95 %, ``selection.bands``) lies wholly above the control's;
c. of the candidates that are eligible and clear, the one with the largest validator gain is kept; when none is,
   or the control has no band (too few target samples), the control is kept.

No target labels are read. Pure functions of the runs' figures, so the rule is tested on its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .bands import Band

CONTROL = "control"  # the name the control has among the runs of a selection


@dataclass(frozen=True)
class Evidence:
    """What the rule reads of one trained run: its source held-out accuracy in [0, 1] (None without a held-out
    split) and its validator band (None with the reason in ``problem``)."""

    source_acc: float | None
    band: Band | None
    problem: str = ""


@dataclass(frozen=True)
class Verdict:
    """One candidate against the control: eligible, clears, its validator gain over the control, and why (a
    sentence)."""

    eligible: bool
    clears: bool
    gain: float | None
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"eligible": self.eligible, "clears": self.clears, "gain": self.gain, "why": self.why}


def _pct(acc: float | None) -> str:
    return "–" if acc is None else f"{100 * acc:.1f} %"


def judge(candidate: Evidence, control: Evidence, held_out: int, validator: str, guard: float = 1.0) -> Verdict:
    """The rule's steps a and b for one candidate; ``held_out``: the number of held-out source samples (0: none,
    then the guard cannot be read and is skipped, and the verdict says so)."""
    if candidate.source_acc is not None and control.source_acc is not None and held_out > 0:
        loss = 100 * (control.source_acc - candidate.source_acc)
        one = 100 / held_out
        if loss > guard and loss > one + 1e-9:
            why = (
                f"not eligible: source held-out accuracy {_pct(candidate.source_acc)} against the control's "
                f"{_pct(control.source_acc)}, {loss:.1f} points lower (the guard: {guard:g} point and one of "
                f"{held_out} held-out samples, {one:.1f} points)"
            )
            return Verdict(False, False, None, why)
    if candidate.band is None or control.band is None:
        missing = candidate if candidate.band is None else control
        who = "this candidate" if candidate.band is None else "the control"
        return Verdict(True, False, None, f"no `{validator}` band for {who} ({missing.problem or 'no score'})")
    gain = candidate.band.score - control.band.score
    both = f"`{validator}` {candidate.band} against the control's {control.band}"
    if held_out == 0:
        both += " (no held-out source samples: the source guard could not be read)"
    if candidate.band.low > control.band.high:
        return Verdict(True, True, gain, f"clears: {both}, the 95 % bands apart")
    where = "the 95 % bands overlap" if candidate.band.high >= control.band.low else "lower"
    return Verdict(True, False, gain, f"does not clear: {both}, {where}")


def choose(
    runs: dict[str, Evidence], held_out: int, validator: str, guard: float = 1.0
) -> tuple[str, dict[str, Verdict]]:
    """The run to keep (a candidate's name, or ``CONTROL``) and each candidate's verdict. ``runs`` holds the
    control's evidence under ``CONTROL`` and each candidate's under its name; ties of gain go to the earlier
    candidate. Raises ``KeyError`` without the control."""
    control = runs[CONTROL]
    verdicts = {n: judge(e, control, held_out, validator, guard) for n, e in runs.items() if n != CONTROL}
    cleared = [n for n, v in verdicts.items() if v.eligible and v.clears]
    if not cleared:
        return CONTROL, verdicts
    return max(cleared, key=lambda n: (verdicts[n].gain, -list(verdicts).index(n))), verdicts


def summary(kept: str, verdicts: dict[str, Verdict], method: str) -> str:
    """One sentence: what the default kept and why, for ``dann train``'s output and the report."""
    if kept == CONTROL:
        return (
            "kept the source-only control, the safe choice: no candidate beat it clearly on this data (which does "
            "not show that none would help: their bands may be too wide to tell) ("
            + "; ".join(f"{n}: {v.why}" for n, v in verdicts.items())
            + ")"
        )
    others = [f"{n}: {v.why}" for n, v in verdicts.items() if n != kept]
    rest = f"; {'; '.join(others)}" if others else ""
    named = f" ({method})" if method != kept else ""
    return f"kept {kept}{named}: it {verdicts[kept].why}{rest}"
