"""``python -m unmix_ext.demo``: SimCLR with and without Un-Mix on Fashion-MNIST, in minutes on a CPU.

What ``make demo`` runs: both demo recipes pretrain, each frozen backbone is scored on the official
test split, and the table and figure land in ``<out>/`` (:mod:`unmix_ext.tools.demo`).
"""
import sys
from pathlib import Path

from unmix_ext.cli import Command, argument, positive_int

COMMAND = Command(
    "demo", __doc__, "unmix_ext.tools.demo:demo",
    (
        argument("--epochs", type=positive_int, default=None, help="pretraining epochs (default: the recipes')"),
        argument("--out", type=Path, default=Path("results"), help="where demo.png and demo.md go (default results/)"),
    ),
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
