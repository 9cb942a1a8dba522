"""The layering of fabric/ (tests/importlinter.ini), checked with import-linter on the real tree,
and shown to catch what it is for: an engine file that imports gradio or reaches up a layer."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "importlinter.ini"


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; "
               "sys.exit(c())", str(CONFIG), "--no-cache"]
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def test_the_tree_keeps_every_contract():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize("line, broken", [
    ("import gradio", "the engine imports no webui, UI, HTTP or model library"),
    ("from ..feedback import settings", "hosts, panel and benchmarks above feedback, feedback above the engine"),
])
def test_an_engine_file_that_breaks_the_layering_fails(tmp_path, line, broken):
    shutil.copytree(ROOT / "fabric", tmp_path / "fabric", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    schedule = tmp_path / "fabric" / "engine" / "schedule.py"
    schedule.write_text(schedule.read_text() + f"\n{line}  # the defect under test\n")
    run = lint_imports(tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    report = " ".join(run.stdout.split())
    assert f"{broken} BROKEN" in report
    assert "fabric.engine.schedule" in report
