"""What the README and the docstrings say, checked against what the code does."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
#: a repository file named in prose: docs/..., recipes/..., patches/..., benchmarks/..., unmix_ext/...
CITED = re.compile(r"(?<![\w/.-])((?:docs|recipes|patches|benchmarks|unmix_ext)/[\w/.-]*\.(?:md|py|yaml))")


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks(README.read_text()))))
def test_the_readme_python_snippets_run_as_written(index, tmp_path):
    snippet = _python_blocks(README.read_text())[index]
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_readme_shows_the_python_entry_point():
    assert any(block.startswith("import unmix_ext.methods") for block in _python_blocks(README.read_text()))


def _sources() -> list[Path]:
    found = [README, *(REPO / "docs").rglob("*.md")]
    for folder in ("unmix_ext", "patches", "benchmarks", "recipes", "tests"):
        found += [p for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".yaml", ".md")]
    return found


def test_every_file_the_code_and_docs_cite_is_in_the_repository():
    missing = {}
    for source in _sources():
        text = source.read_text()
        for cited in CITED.findall(text):
            if not (REPO / cited).exists() and not (REPO / cited.replace("unmix_ext/patches/", "patches/")).exists():
                missing.setdefault(str(source.relative_to(REPO)), []).append(cited)
    assert missing == {}
    # the shared spec page the project was built from is no file of the repository: nothing may send a reader there
    spec_page = "UNMIX" + "_SPEC"
    assert [str(s.relative_to(REPO)) for s in _sources() if spec_page in s.read_text()] == []
    # the one account of what Un-Mix computes is in the repository, and the core cites it
    assert "docs/unmix.md" in (REPO / "unmix_ext" / "losses.py").read_text()


@pytest.mark.parametrize("module", ["unmix_ext.knn", "unmix_ext.mixing", "unmix_ext.runner.data", "unmix_ext"])
def test_a_library_module_run_as_a_command_says_it_is_not_one(module):
    done = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {module}: not a command")
    assert "python -m unmix_ext.run" in done.stderr


def test_a_command_module_still_runs():
    shown = subprocess.run([sys.executable, "-m", "unmix_ext.run", "--help"], capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: python -m unmix_ext.run")
