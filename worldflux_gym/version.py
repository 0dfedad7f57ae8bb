"""The library's version, at the bottom of the import graph: every layer may read it (checkpoint
metadata, agent sidecars, ``worldflux-gym --version``) without importing the package's top level.
``worldflux_gym.__version__`` and pyproject's dynamic version read it from here."""

__version__ = "0.1.0"
