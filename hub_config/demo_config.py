"""The demo as a plain JupyterHub config: ``jupyterhub -f hub_config/demo_config.py``.

The same as ``heroes demo`` (which writes an equivalent config into its state directory and runs
JupyterHub with it): SQLite in ``$HEROES_DEMO_DIR`` (default ``~/.heroes-demo``), a demo organization,
one user per role with the passwords printed below, SimpleLocalProcessSpawner, the HEROES service.
``HEROES_DEMO_IP`` / ``HEROES_DEMO_PORT`` change where the hub listens (default 127.0.0.1:8000).
"""

import os

from jupyter_heroes.demo import banner, configure, default_state_dir, prepare

c = get_config()  # noqa: F821

ip = os.environ.get("HEROES_DEMO_IP", "127.0.0.1")
port = int(os.environ.get("HEROES_DEMO_PORT", "8000"))
state, users = prepare(default_state_dir())
configure(c, state.state_dir, ip=ip, port=port)
print(banner(state, users, ip, port), flush=True)
