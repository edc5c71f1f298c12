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
exec heroes demo "$@"
