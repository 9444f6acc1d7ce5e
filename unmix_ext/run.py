"""``python -m unmix_ext.run RECIPE [key=value ...]``: one pretraining run, then its evaluation.

``RECIPE`` is a solo-learn pretraining YAML (its ``defaults:`` list composed by Hydra) with an
``unmix:`` section or ``method: <name>_unmix``; the run is :func:`unmix_ext.runner.run.run`.
"""
import sys

from unmix_ext.cli import Command, argument

COMMAND = Command(
    "run", __doc__, "unmix_ext.runner.run:run_recipe",
    (argument("recipe", help="a solo-learn pretraining YAML (see unmix_ext.runner.config)"),),
    settings=True,
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
