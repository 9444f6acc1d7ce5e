"""``python -m unmix_ext.export CHECKPOINT OUT --format FORMAT [--which BACKBONE]``: a backbone for another library.

Writes the pretrained backbone of a pretraining checkpoint (ours, or solo-learn's of any release) for
torchvision, timm or detectron2, and ``OUT.json`` beside it; or, with ``--format solo``, the folder
``OUT`` holding a ``.ckpt`` and its ``args.json`` that solo-learn's ``main_linear.py``, ``main_knn.py``
and ``main_umap.py`` load (:mod:`unmix_ext.tools.export`).
"""
import sys

from unmix_ext.cli import Command, argument

COMMAND = Command(
    "export", __doc__, "unmix_ext.tools.export:export_command",
    (
        argument("checkpoint", help="a .ckpt of a solo-learn method, written by unmix_ext.run or solo-learn (any release)"),
        argument("out", help="the file to write, its sidecar OUT.json; with --format solo, the folder to write"),
        argument("--format", dest="fmt", required=True, metavar="{detectron2,solo,timm,torchvision}",
                 help="what the export is for"),
        argument("--which", default="online", metavar="{online,momentum}", help="the backbone to export"),
    ),
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
