"""``python -m unmix_ext.main_umap --pretrained_checkpoint_dir DIR --dataset D --train_data_path P ...``: solo-learn's UMAP.

The flags of solo-learn's ``main_umap.py``, as its ``scripts/umap/*.sh`` pass them; ``DIR`` as for
``main_knn``. Writes a UMAP of the backbone features of each split, ``umap_train.png`` and
``umap_val.png``, and prints their paths (:mod:`unmix_ext.tools.solo_eval`).
"""
import sys

from unmix_ext.cli import Command
from unmix_ext.main_knn import SOLO_DATA_ARGUMENTS

COMMAND = Command("main_umap", __doc__, "unmix_ext.tools.solo_eval:main_umap", SOLO_DATA_ARGUMENTS)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
