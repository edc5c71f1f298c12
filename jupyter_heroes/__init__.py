"""Jupyter HEROES: a JupyterHub extension that turns a hub into an HPC marketplace."""

from typing import Any

from ._version import __version__

__all__ = ["__version__", "load_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_heroes``: the ``%heroes`` magics (imported only when loaded)."""
    from .magics import load_ipython_extension as load

    load(ipython)
