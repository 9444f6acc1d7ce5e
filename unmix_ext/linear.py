"""``python -m unmix_ext.linear RUN_DIR|CHECKPOINT [key=value ...]``: the linear protocol on a run's checkpoint.

It reads the recipe the run saved (``RUN_DIR/config.yaml``), applies the overrides (``eval.linear.*``,
data paths, devices; any other key is refused in one line) and writes ``RUN_DIR/linear.json``
(:mod:`unmix_ext.runner.linear`). A solo-learn checkpoint (any release) takes its data from the
``args.json`` beside it instead, and writes ``linear.json`` beside the checkpoint.
"""
import sys

from unmix_ext.cli import Command, argument

COMMAND = Command(
    "linear", __doc__, "unmix_ext.runner.linear:evaluate_checkpoint",
    (argument("checkpoint", help="a run directory of python -m unmix_ext.run, a .ckpt in one, or a solo-learn "
                                 ".ckpt (args.json beside)"),),
    settings=True,
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
