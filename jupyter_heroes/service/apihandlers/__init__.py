"""REST resources, one module per resource, each exporting ``default_handlers`` (JupyterHub style).

Every module of this package is loaded, so a new resource (workflows, data, decision ...) is a new
module here with handlers derived from :class:`jupyter_heroes.service.handlers.APIHandler`; its
endpoints then appear in the OpenAPI document and are covered by ``tests/service`` automatically.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

#: resource modules in a stable order (alphabetical)
modules = [
    importlib.import_module(f"{__name__}.{m.name}")
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
    if not m.name.startswith("_")
]

default_handlers: list[tuple[str, Any]] = [h for mod in modules for h in getattr(mod, "default_handlers", [])]
