#!/usr/bin/env bash
# Run the HEROES demo on this machine: installs what the demo needs (the package, and
# configurable-http-proxy from npm) and starts `heroes demo`: JupyterHub on http://127.0.0.1:8000 with
# SQLite, a demo organization, one user per role (passwords printed) and the local execution backend.
# Arguments go to `heroes demo` (see `heroes demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v configurable-http-proxy >/dev/null 2>&1; then
  command -v npm >/dev/null 2>&1 || { echo "The demo needs Node.js and npm (for configurable-http-proxy): install them first, e.g. apt-get install nodejs npm" >&2; exit 1; }
  npm install -g --no-audit --no-fund configurable-http-proxy@5.3.0
fi
python3 -m pip install -q -e ".[notebook]"
# an editable install does not install data files: enable the Jupyter server extension and link the
# prebuilt JupyterLab extension into this Python's prefix by hand
prefix=$(python3 -c 'import sys; print(sys.prefix)')
mkdir -p "$prefix/etc/jupyter/jupyter_server_config.d" "$prefix/share/jupyter/labextensions"
cp jupyter-config/jupyter_server_config.d/jupyter_heroes.json "$prefix/etc/jupyter/jupyter_server_config.d/"
ln -sfn "$PWD/jupyter_heroes/labextension" "$prefix/share/jupyter/labextensions/jupyter-heroes"
exec heroes demo "$@"
