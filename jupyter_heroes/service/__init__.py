"""The HEROES service: a JupyterHub-managed tornado application serving the REST API (``/api/v1``)."""
