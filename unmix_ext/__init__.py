"""unmix-ext: Un-Mix (Shen et al., AAAI 2022) for every solo-learn method.

The package, by layer (each imports only the layers above it in this list):

- the core: :mod:`unmix_ext.mixing` (a batch mixed with its reversed self),
  :mod:`unmix_ext.losses`, :mod:`unmix_ext.knn`, :mod:`unmix_ext.backbones` (timm encoders);
- :mod:`unmix_ext.methods`: the Un-Mix variants. ``import unmix_ext.methods`` adapts
  solo-learn 1.0.2 to the current stack (:mod:`unmix_ext.patches`, the repository's
  ``patches/``) and registers the variants in solo-learn's registry ``solo.methods.METHODS``;
  it is the one line to write before anything from ``solo``;
- :mod:`unmix_ext.runner`: recipes, data, Lightning trainer, evaluation, run directories;
- :mod:`unmix_ext.tools`: the demo, the paper's tables, exports;
- the commands, ``python -m unmix_ext.<command>`` (:mod:`unmix_ext.cli`): the modules of this
  package with a ``__main__`` block. Any other module run that way stops with one line saying it
  is not a command, rather than running nothing and exiting 0.

Importing ``unmix_ext`` itself imports nothing else, so a command's ``--help`` answers at once.
What Un-Mix computes for each family of methods is written down in ``docs/unmix.md``.
"""
import sys

__version__ = "0.1.0"

_MAIN_GUARD = 'if __name__ == "__main__":'


def _is_command(module: str) -> bool:
    """Whether ``python -m <module>`` runs something: a module with a ``__main__`` block, or a package
    with a ``__main__`` module."""
    from importlib.util import find_spec

    try:
        spec = find_spec(module)
    except (ImportError, ValueError):
        return True  # not ours to judge: Python reports the missing module itself
    if spec is None:
        return True
    if spec.submodule_search_locations is not None:
        return find_spec(f"{module}.__main__") is not None
    try:
        with open(spec.origin, encoding="utf-8") as source:
            return _MAIN_GUARD in source.read()
    except OSError:
        return True


def _commands() -> list[str]:
    import pkgutil

    return sorted(info.name for info in pkgutil.iter_modules(__path__)
                  if not info.ispkg and _is_command(f"{__name__}.{info.name}"))


def _refuse_a_library_module_as_a_command() -> None:
    # runpy sets argv[0] to "-m" while it imports the packages above the module it was asked to run
    if sys.argv[:1] != ["-m"] or "-m" not in sys.orig_argv:
        return
    target = sys.orig_argv[sys.orig_argv.index("-m") + 1 :][:1]
    if not target or not (target[0] == __name__ or target[0].startswith(f"{__name__}.")):
        return
    if not _is_command(target[0]):
        listed = ", ".join(f"python -m {__name__}.{name}" for name in _commands())
        print(f"error: {target[0]}: not a command (a library module); the commands are {listed}", file=sys.stderr)
        raise SystemExit(2)


_refuse_a_library_module_as_a_command()
