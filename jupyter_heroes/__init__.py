"""Jupyter HEROES: a JupyterHub extension that turns a hub into an HPC marketplace."""

from ._version import __version__

__all__ = ["__version__"]
