"""``python -m unmix_ext.demo``: SimCLR with and without Un-Mix on Fashion-MNIST, in minutes on a CPU.

What ``make demo`` runs: both demo recipes pretrain with each seed, every frozen backbone and two
references are scored on the official test split, and the table, figure and per-seed numbers land
in ``<out>/`` (:mod:`unmix_ext.tools.demo`).
"""
import argparse
import sys
from pathlib import Path

from unmix_ext.cli import Command, argument

COMMAND = Command(
    "demo", __doc__, "unmix_ext.tools.demo:demo",
    (
        # the demo itself checks epochs and seeds (>= 1), in one line, and holds the default seed count
        argument("--epochs", type=int, default=None, help="pretraining epochs (default: the recipes')"),
        argument("--seeds", type=int, default=argparse.SUPPRESS,
                 help="seeds per recipe (default 2): the table shows mean +- std over them"),
        argument("--long", action="store_true", help="the longer budget of recipes/demo/*_long.yaml"),
        argument("--reuse", action="store_true",
                 help="score runs already finished under runs/demo with the same recipe, overrides and seed "
                      "instead of training them again"),
        argument("--out", type=Path, default=Path("results"),
                 help="where demo.png, demo.md and demo.json go (default results/)"),
    ),
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
