"""``python -m unmix_ext.export CHECKPOINT OUT --format FORMAT [--which ENCODER]``: a backbone for another library.

Writes the pretrained backbone of a training checkpoint for torchvision, timm or detectron2, and
``OUT.json`` beside it (:mod:`unmix_ext.tools.export`).
"""
import sys

from unmix_ext.cli import Command, argument

COMMAND = Command(
    "export", __doc__, "unmix_ext.tools.export:export_command",
    (
        argument("checkpoint", help="a .ckpt written by a Lightning Trainer for a solo-learn method"),
        argument("out", help="the file to write; its sidecar is OUT.json"),
        argument("--format", dest="fmt", required=True, metavar="{detectron2,timm,torchvision}",
                 help="what the export is for"),
        argument("--which", default="online", metavar="{online,momentum}", help="the encoder to export"),
    ),
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
