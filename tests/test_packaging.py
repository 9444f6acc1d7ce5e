"""What ``pip install .`` (not editable) installs: every module of the source tree."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_module_and_the_paper_numbers(tmp_path):
    # the build runs in this environment (no isolation): no download, a few seconds
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel, = tmp_path.glob("unmix_ext-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    sources = {f"unmix_ext/{p.relative_to(REPO / 'unmix_ext').as_posix()}"
               for p in (REPO / "unmix_ext").rglob("*.py")}
    sources |= {f"unmix_ext/patches/{p.name}" for p in (REPO / "patches").glob("*.py")}
    assert sources - packed == set()
    assert "unmix_ext/paper_results.yaml" in packed
