"""``python -m unmix_ext.main_linear --config-path DIR --config-name NAME [key=value ...]``: solo-learn's linear.

solo-learn main's ``main_linear.py`` command line as it is: its linear YAML
(``scripts/linear/<dataset>/<method>.yaml``, composed by Hydra) and Hydra overrides, above all
``pretrained_feature_extractor=CKPT`` (a checkpoint of ours or of any solo-learn release). Also
``python -m unmix_ext.main_linear LINEAR_YAML [key=value ...]``. Writes the run's ``results.json``
(``linear_top1``, ``linear_top5``, ``backbone_tensors_loaded`` / ``_expected``) under
``<checkpoint.dir>/linear/`` (:mod:`unmix_ext.tools.solo_eval`).
"""
import sys

from unmix_ext.cli import Command, argument

COMMAND = Command(
    "main_linear", __doc__, "unmix_ext.tools.solo_eval:main_linear",
    (
        argument("target", nargs="?", default=None, help="the linear YAML (or --config-path and --config-name)"),
        argument("--config-path", "-cp", dest="config_path", default=None, help="the folder of the linear YAML"),
        argument("--config-name", "-cn", dest="config_name", default=None, help="its name, e.g. byol.yaml"),
    ),
    settings=True,
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
