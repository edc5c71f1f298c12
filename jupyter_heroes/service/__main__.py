"""``python -m jupyter_heroes.service``: run the HEROES service (as a JupyterHub managed service)."""

from .app import main

if __name__ == "__main__":
    main()
