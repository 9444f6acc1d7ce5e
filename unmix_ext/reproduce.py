"""``python -m unmix_ext.reproduce TABLE [--scale smoke] [key=value ...]``: every row of one of the paper's tables.

Runs each row's recipe (``recipes/<table>/``), then prints our numbers beside the paper's and
writes ``<out>/<table>.md`` and ``.png`` (:mod:`unmix_ext.tools.reproduce`).
"""
import sys
from pathlib import Path

from unmix_ext.cli import Command, argument

COMMAND = Command(
    "reproduce", __doc__, "unmix_ext.tools.reproduce:reproduce",
    (
        argument("table", metavar="{table1,moco-cifar,swav-cifar,small}", help="the paper's table"),
        argument("--out", type=Path, default=Path("results"), help="where <table>.md/.png go (default results/)"),
        argument("--resume", action="store_const", dest="mode", const="resume", default="run",
                 help="read rows that already have results.json instead of training them again"),
        argument("--render-only", action="store_const", dest="mode", const="render",
                 help="train nothing; rows without results show 'missing'"),
    ),
    settings=True,
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
