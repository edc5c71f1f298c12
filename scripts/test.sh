#!/usr/bin/env bash
# Run the whole test suite on this machine: install the test bed (apt, npm, pip; idempotent), lint, then
# pytest. The real components (Slurm, sshd, PostgreSQL, S3, OIDC provider, JupyterHub, Chromium) are
# started by the pytest fixtures themselves and stopped by PID at the end of the session.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/db -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-testbed.sh
ruff check .
ruff format --check .
# the JupyterLab extension's unit tests (its production build is committed in jupyter_heroes/labextension)
(cd labextension && npm ci --no-audit --no-fund --loglevel=error && npm test -- --silent)
mkdir -p test-artifacts
python -m pytest "$@"
