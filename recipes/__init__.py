"""The recipes, solo-learn-format YAML: one file per row of the paper's tables, and the demo's.

This folder ships inside the package as ``unmix_ext.recipes`` (setup.cfg), so a plain
``pip install`` can reproduce a table; :data:`ROOT` is where its files are.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent
