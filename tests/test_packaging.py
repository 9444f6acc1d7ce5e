"""What ``pip install .`` (not editable) installs: every module, the recipes and the paper numbers,
and a package that runs from them in a fresh virtual environment, away from this checkout."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the commands' --help must answer this fast (seconds): it imports no torch, Lightning or solo-learn
HELP_SECONDS = 2.0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # the build runs in this environment (no isolation): no download, a few seconds
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(REPO)], check=True, capture_output=True)
    found, = out.glob("unmix_ext-*.whl")
    return found


def test_the_wheel_holds_every_module_recipe_and_the_paper_numbers(wheel):
    packed = set(zipfile.ZipFile(wheel).namelist())
    sources = {f"unmix_ext/{p.relative_to(REPO / 'unmix_ext').as_posix()}" for p in (REPO / "unmix_ext").rglob("*.py")}
    sources |= {f"unmix_ext/patches/{p.name}" for p in (REPO / "patches").glob("*.py")}
    sources |= {f"unmix_ext/recipes/{p.relative_to(REPO / 'recipes').as_posix()}"
                for p in (REPO / "recipes").rglob("*") if p.suffix in (".py", ".yaml")}
    assert len(sources) > 100 and sources - packed == set()
    assert "unmix_ext/tools/paper_results.yaml" in packed


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh venv holding the wheel (not editable); the stack (torch, solo-learn...) is borrowed from
    this environment through a .pth line, so nothing is downloaded or installed twice."""
    root = tmp_path_factory.mktemp("venv")
    venv.create(root, with_pip=False)
    python = root / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # after the venv's own site-packages: the wheel's unmix_ext wins over this checkout's editable one,
    # whose finder lives in a .pth file that a path listed in another .pth never runs
    (site / "borrowed_stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return python, env


def test_installed_package_runs_from_its_own_files(installed, tmp_path):
    python, env = installed
    where = subprocess.run([str(python), "-c", "import unmix_ext.recipes, unmix_ext.tools.reproduce as r; "
                            "print(unmix_ext.recipes.ROOT); print(r.PAPER_FILE)"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert len(where) == 2 and all(REPO not in Path(p).parents for p in where), where
    assert all(Path(p).exists() for p in where)


@pytest.mark.parametrize("command", ["run", "linear", "export", "reproduce", "demo", "main_linear", "main_knn", "main_umap"])
def test_help_answers_at_once(installed, tmp_path, command):
    python, env = installed
    started = time.perf_counter()
    shown = subprocess.run([str(python), "-m", f"unmix_ext.{command}", "--help"], cwd=tmp_path, env=env,
                           check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    assert shown.startswith(f"usage: python -m unmix_ext.{command}")
    assert seconds < HELP_SECONDS, f"python -m unmix_ext.{command} --help took {seconds:.1f} s"


def test_smoke_reproduction_runs_from_the_installed_package(installed, tmp_path):
    python, env = installed
    done = subprocess.run(
        [str(python), "-m", "unmix_ext.reproduce", "table1", "--scale", "smoke", "--out", str(tmp_path / "results"),
         f"checkpoint.dir={tmp_path / 'runs'}", "data.num_workers=0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "results" / "table1-smoke.md").read_text()
    assert table.startswith("# SMOKE RUN") and "| MoCo V2 + Un-Mix, 800 ep |" in table and "missing" not in table
