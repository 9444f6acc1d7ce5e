"""``python -m unmix_ext.main_pretrain FLAGS``: solo-learn 1.0.2's pretraining command line.

The flags are those of 1.0.2's ``main_pretrain.py`` and its bash scripts, plus ``--method
<name>_unmix``, the ``--unmix_*`` options and ``--scale smoke`` (:mod:`unmix_ext.tools.main_pretrain`).
Its ``--help`` is solo-learn's parser, so it imports solo-learn (and Lightning) first.
"""
import sys

from unmix_ext.cli import Command

COMMAND = Command("main_pretrain", __doc__, "unmix_ext.tools.main_pretrain:run_flags", passthrough=True)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
