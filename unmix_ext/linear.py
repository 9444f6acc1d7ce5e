"""``python -m unmix_ext.linear CHECKPOINT [key=value ...]``: the linear protocol on a run's checkpoint.

It reads the recipe the run saved (``RUN_DIR/config.yaml``), applies the overrides (e.g.
``eval.linear.lr=0.1``) and writes ``RUN_DIR/linear.json`` (:mod:`unmix_ext.runner.linear`). A
solo-learn checkpoint (any release) takes its data from the ``args.json`` beside it instead, and
writes ``linear.json`` beside the checkpoint.
"""
import sys

from unmix_ext.cli import Command, argument

COMMAND = Command(
    "linear", __doc__, "unmix_ext.runner.linear:evaluate_checkpoint",
    (argument("checkpoint", help="a .ckpt written by python -m unmix_ext.run, or by solo-learn (args.json beside)"),),
    settings=True,
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
