"""``python -m unmix_ext.main_knn --pretrained_checkpoint_dir DIR --dataset D --train_data_path P ...``: solo-learn's kNN.

The flags of solo-learn's ``main_knn.py``, as its ``scripts/knn/*.sh`` pass them; ``DIR`` is a solo-learn
checkpoint folder (``args.json`` and a ``.ckpt``) or a run directory of ``python -m unmix_ext.run``. Prints
the whole grid of k x temperature x feature type x distance and writes it to ``knn.md`` and ``knn.json``
(:mod:`unmix_ext.tools.solo_eval`).
"""
import sys

from unmix_ext.cli import Command, argument, positive_int

#: solo-learn's dataset and loader flags (``solo/args/dataset.py``), which main_knn and main_umap share
SOLO_DATA_ARGUMENTS = (
    argument("--pretrained_checkpoint_dir", required=True,
             help="a solo-learn checkpoint folder (args.json and a .ckpt) or a run directory of unmix_ext.run"),
    argument("--dataset", default=None, metavar="{cifar10,cifar100,stl10,imagenet,imagenet100,custom}",
             help="the dataset (a run directory's own when left out); custom: class folders"),
    argument("--train_data_path", default=None, help="the training images (a run directory's own when left out)"),
    argument("--val_data_path", default=None, help="the validation images"),
    argument("--data_format", default="image_folder", metavar="{image_folder,dali,h5}",
             help="dali reads the same folders here"),
    argument("--data_fraction", type=float, default=-1.0, help="share of the training images used; -1: all"),
    argument("--no_labels", action="store_true", help="the images have no class folders"),
    argument("--mean", type=float, nargs="+", default=None, help="per-channel mean (custom data)"),
    argument("--std", type=float, nargs="+", default=None, help="per-channel std (custom data)"),
    argument("--batch_size", type=positive_int, default=16),
    argument("--num_workers", type=int, default=10),
    argument("--output_dir", default=None, help="where to write (default: the checkpoint folder or run directory)"),
    argument("--scale", default="full", metavar="{full,smoke}",
             help="smoke: at most 256 images per split, crops of at most 32 px"),
)

COMMAND = Command(
    "main_knn", __doc__, "unmix_ext.tools.solo_eval:main_knn",
    (
        *SOLO_DATA_ARGUMENTS,
        argument("--k", type=positive_int, nargs="+", default=[20], help="neighbours (several: one row each)"),
        argument("--temperature", type=float, nargs="+", default=[0.07], help="cosine vote temperatures"),
        argument("--feature_type", nargs="+", default=["backbone"], metavar="{backbone,projector}"),
        argument("--distance_function", nargs="+", default=["cosine"], metavar="{euclidean,cosine}"),
    ),
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
