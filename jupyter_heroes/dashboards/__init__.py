"""The administration and vendor dashboards: ipywidgets apps on the HEROES REST API, shown by the
Voila services ``heroes-admin`` and ``heroes-vendor`` (``notebooks/admin.ipynb``,
``notebooks/vendor.ipynb``; hub configuration in :mod:`jupyter_heroes.hubconfig_apps`).

- :class:`AdminApp`: organization administrators (users, groups, roles, clusters and their
  compliance check, templates, enabled offers, budgets, usage and cost, decision performance, audit)
  and platform administrators (organizations, platform health);
- :class:`VendorApp`: resource providers (offers with prices and terms, who uses them, revenue) and
  application providers (applications with licence prices);
- :class:`DashboardAPI`: the REST calls they make, through one
  :class:`~jupyter_heroes.client.HeroesClient` acting as the visitor.
"""

from .admin import AdminApp
from .api import DashboardAPI
from .vendor import VendorApp

__all__ = ["AdminApp", "DashboardAPI", "VendorApp"]
