"""``benchmarks/gpu_check.py``, the GPU check, in its dry run on the CPU: every part runs and reports its numbers,
the report printed is the report written, resume is exact; without ``--dry-run`` on a CPU it stops with one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_kill_resume import ENV  # one CPU thread, no CUDA, this checkout's dann on the path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"
NUMBER = r"\d+(?:\.\d+)?"
EXPECTED = {  # what each part must report, with numbers
    "card": r"^- card: CPU, dry run \(",
    "versions": r"^- torch \S+, CUDA none \(dry run\), timm \S+, dann \S+",
    "date": r"^- date: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d",
    "1 supervised": rf"^## 1\. DANN step vs supervised step\n(?:.*\n)*?\| supervised .* \| {NUMBER} \|$",
    "1 dann": rf"^\| DANN \(B source \+ B target images\) \| {NUMBER} \|$",
    "1 ratio": rf"^- ratio \(DANN step time / supervised step time\): {NUMBER}$",
    "1 memory": r"^- peak RSS of the process, both steps' networks held: \d+ MiB$",
    "2 files": rf"^## 2\. Data wait(?:.*\n)*?\| files \| {NUMBER} \| {NUMBER} \| {NUMBER}% \|$",
    "2 cache": rf"^\| cache \| {NUMBER} \| {NUMBER} \| {NUMBER}% \|$",
    "2 speed-up": rf"^- cache speed-up of the DANN step: {NUMBER}x",
    "3 torchrun": r"^## 3\. torchrun(?:.*\n)*?- command: `torchrun --standalone --nproc_per_node 1 -m dann train ",
    "3 finished": rf"^- finished: yes, step 4/4, wall time {NUMBER} s .* target accuracy {NUMBER}",
    "4 resume": r"^## 4\. Exact resume\n(?:.*\n)*?.*SIGINT at step 2, resumed to 4",
    "4 exact": r"^- resumed vs uninterrupted weights: exact \(\d+ tensors, bit for bit\)$",
    "total": r"^total: \d+ s, 0 parts failed$",
}


def gpu_check(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_dry_run_reports_every_part_with_numbers(tmp_path):
    out = tmp_path / "gpu_check.md"
    done = gpu_check("--dry-run", "--out", str(out))
    assert done.returncode == 0, done.stderr
    report = out.read_text()
    missing = [name for name, pattern in EXPECTED.items() if not re.search(pattern, report, re.MULTILINE)]
    assert not missing, f"missing {missing} in:\n{report}"
    assert "failed**" not in report
    assert report.index("- card:") < report.index("## 1.") < report.index("## 2.") < report.index("## 3.")
    assert done.stdout.strip() == report.strip()  # every figure printed, as written
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"


def test_without_a_gpu_and_without_dry_run_it_stops_with_one_line(tmp_path):
    out = tmp_path / "gpu_check.md"
    done = gpu_check("--out", str(out), timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu_check: no CUDA device here; pass --dry-run to run the same checks on the CPU with tiny sizes"
    ]
    assert done.stdout == "" and not out.exists()


def test_an_existing_report_is_not_overwritten_silently(tmp_path):
    out = tmp_path / "gpu_check.md"
    out.write_text("earlier report\n")
    done = gpu_check("--dry-run", "--out", str(out), timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "--overwrite" in done.stderr and out.read_text() == "earlier report\n"
