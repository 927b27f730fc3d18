"""The stage order of the core (and flows -> tasks -> mmrag_core) is an import contract in pyproject.toml,
checked here on every test run; a forbidden import added to a copy of the tree must break it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # the tree in cwd, not the installed one
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_tree_keeps_every_import_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy_tree(tmp_path: Path) -> Path:
    for name in ("mmrag_core", "tasks", "flows"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add_import(path: Path, line: str) -> None:
    text = path.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    path.write_text(head + sep + line + "\n" + rest)


LAYERS = "the core's stages import only earlier stages (data-flow order)"
VIOLATIONS = {
    "a later stage imported by an earlier one": (
        [("mmrag_core/storage/store.py", "import mmrag_core.query.engine  # forbidden")],
        [f"{LAYERS} BROKEN", "mmrag_core.storage.store -> mmrag_core.query.engine"]),
    "Prefect in the core, flows imported by tasks": (
        [("mmrag_core/query/fusion.py", "import prefect  # forbidden"), ("tasks/retries.py", "import flows.params")],
        ["the core is plain Python: no Prefect, no Ray BROKEN", "flows -> tasks -> mmrag_core BROKEN"]),
    "an import cycle inside a stage": (
        [("mmrag_core/index/refine.py", "import mmrag_core.index.shards  # a cycle")],
        ["no import cycles between modules of one stage BROKEN"]),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_a_forbidden_import_breaks_the_contract(tmp_path: Path, case: str) -> None:
    edits, expected = VIOLATIONS[case]
    tree = _copy_tree(tmp_path)
    for path, line in edits:
        _add_import(tree / path, line)
    result = _lint(tree)
    assert result.returncode != 0
    for line in expected:
        assert line in result.stdout, result.stdout
