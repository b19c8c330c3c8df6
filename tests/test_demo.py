import json
import re

import pytest

from dann.cli import main
from dann.demo import demo_methods
from dann.runs import METRICS_FILE, read_jsonl


@pytest.mark.selecting
def test_demo_on_moons_prints_each_runs_own_numbers_and_draws_the_boundaries(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--tasks", "moons"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    lines = out.splitlines()  # progress while it trains: a line as each run starts and ends, and its bar
    starting = lines.index("  moons   source_only  training 3000 steps ...")
    assert re.match(
        r"  moons   source_only  time: \S+ s/step → about \d+ s for the \d+ steps left", lines[starting + 1]
    )
    assert lines[starting + 2].startswith("  moons   source_only  done in ")  # the estimate came after the first steps
    assert "3000/3000" in captured.err
    methods = list(demo_methods("moons"))
    assert methods == ["source_only", "dann", "default"] and list(demo_methods("digits")) == ["source_only", "dann"]
    done = [line for line in lines if "done in" in line]
    assert [line.split()[:2] for line in done] == [["moons", m] for m in methods]
    kept = json.loads((tmp_path / "moons-default" / "default.json").read_text())["kept"]
    assert done[-1].endswith(f" s (kept {kept})") and f"(kept: moons: {kept})" in out  # what the default chose
    row = re.compile(r"moons +(\w+) +([\d.]+)% +(?:([+-][\d.]+) pts)? +([\d.]+)% +(\d+) +\d+$")
    printed = {m.group(1): m for m in map(row.match, lines) if m}
    assert list(printed) == methods
    last = {m: read_jsonl(tmp_path / f"moons-{m}" / METRICS_FILE)[-1] for m in methods}  # what each run recorded
    for method, m in printed.items():
        assert m.group(2) == f"{100 * last[method]['oracle']['target_acc']:.1f}"
        assert m.group(4) == f"{100 * last[method]['source_val']['acc']:.1f}"
        assert int(m.group(5)) == last[method]["step"]
        gain = last[method]["oracle"]["target_acc"] - last["source_only"]["oracle"]["target_acc"]
        assert m.group(3) == (None if method == "source_only" else f"{100 * gain:+.1f}")
    assert "target labels are used only to compute this column" in out
    picture = tmp_path / "moons_boundaries.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000
    assert f"pictures: {picture}" in out
    assert main(["demo", "--out", str(tmp_path), "--tasks", "moons"]) == 2  # never overwrites earlier runs
