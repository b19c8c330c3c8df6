"""The command line answers ``--help`` and argument errors without importing the heavy stack (torch takes seconds):
each command imports what it needs when it runs. Nothing here is timed; what is checked is which modules got
imported, in a fresh interpreter."""

import json
import subprocess
import sys

import pytest

from dann.cli import COMMANDS, DATASET_NAMES, METHOD_NAMES, TASK_NAMES

HEAVY = ("torch", "torchvision", "timm", "sklearn", "scipy", "matplotlib", "dann.api", "dann.training.trainer")

# `python -m dann ARGS` in a fresh interpreter; then its exit code and the heavy modules it imported, as JSON
RUN = """
import json, runpy, sys
sys.argv = ["dann", *sys.argv[1:]]
try:
    runpy.run_module("dann", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": [m for m in HEAVY if m in sys.modules]}), file=sys.stderr)
"""


def run_dann(*args: str) -> tuple[int, list[str], str]:
    """Exit code, heavy modules imported, and stdout of ``python -m dann ARGS``."""
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{RUN}", *args], capture_output=True, text=True, timeout=120
    )
    result = json.loads(done.stderr.strip().splitlines()[-1])
    return result["code"], result["heavy"], done.stdout


@pytest.mark.parametrize("args", [["--help"], *([command, "--help"] for command in COMMANDS)], ids=" ".join)
def test_help_imports_no_heavy_module(args):
    code, heavy, out = run_dann(*args)
    assert code == 0 and out.startswith("usage: dann")
    assert heavy == [], f"dann {' '.join(args)} imported {heavy}"


@pytest.mark.parametrize("args", [["train"], ["predict", "--run", "r", "--out", "p.csv"], ["nonesuch"]], ids=" ".join)
def test_argument_errors_import_no_heavy_module(args):
    code, heavy, _ = run_dann(*args)
    assert code == 2
    assert heavy == [], f"dann {' '.join(args)} imported {heavy}"


def test_import_dann_is_light_and_its_public_names_are_imported_on_first_use():
    code = (
        f"import sys, dann; print([m for m in {HEAVY!r} if m in sys.modules]); "
        "print(dann.methods.__name__); "  # a submodule, as when `import dann` imported them all
        "from dann import fit, tune, DANNClassifier, SOURCE; "
        "print(fit.__module__, tune.__module__, DANNClassifier.__module__, SOURCE)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == ["[]", "dann.methods", "dann.api dann.selection.tune dann.sklearn.estimator 0"]


def test_the_names_the_help_lists_are_the_registries_names():
    from dann.data import TASKS
    from dann.data.catalog import DATASETS
    from dann.methods import METHODS

    for listed, registry in [(METHOD_NAMES, METHODS), (TASK_NAMES, TASKS), (DATASET_NAMES, DATASETS)]:
        assert list(listed) == registry.names(), f"dann.cli lists {registry.kind}s {listed}: make it {registry.names()}"
