"""The runner: one recipe in, one run directory out.

Recipes (:mod:`~unmix_ext.runner.config`, solo-learn's Hydra YAML on an OmegaConf schema),
datasets (:mod:`~unmix_ext.runner.data`, on torchvision's readers), the method and its
Lightning trainer (:mod:`~unmix_ext.runner.builder`, :mod:`~unmix_ext.runner.trainer`),
evaluation (:mod:`~unmix_ext.runner.evaluate`, :mod:`~unmix_ext.runner.linear`), the run
directory (:mod:`~unmix_ext.runner.rundir`) and :func:`unmix_ext.runner.run.run`, which ties
them together. It imports the core and :mod:`unmix_ext.methods`, never the tools.
"""
