"""unmix-ext: Un-Mix (Shen et al., AAAI 2022) for every solo-learn method.

The package, by layer (each imports only the layers above it in this list):

- the core: :mod:`unmix_ext.mixing` (a batch mixed with its reversed self),
  :mod:`unmix_ext.losses`, :mod:`unmix_ext.knn`, :mod:`unmix_ext.backbones` (timm encoders);
- :mod:`unmix_ext.methods`: the Un-Mix variants. ``import unmix_ext.methods`` adapts
  solo-learn 1.0.2 to the current stack (:mod:`unmix_ext.patches`, the repository's
  ``patches/``) and registers the variants in solo-learn's registry ``solo.methods.METHODS``;
- :mod:`unmix_ext.runner`: recipes, data, Lightning trainer, evaluation, run directories;
- :mod:`unmix_ext.tools`: the demo, the paper's tables, exports;
- the commands, ``python -m unmix_ext.<command>`` (:mod:`unmix_ext.cli`).

Importing ``unmix_ext`` itself imports nothing else, so a command's ``--help`` answers at once.
"""
__version__ = "0.1.0"
