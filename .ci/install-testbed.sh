#!/usr/bin/env bash
# Install everything the HEROES test bed needs on a fresh Debian 12 (root, no systemd, no Docker).
#
#   bash .ci/install-testbed.sh            # from anywhere; the repository root is found from this file
#
# Idempotent: a second run skips what is installed (apt only runs when a package is missing;
# HEROES_FORCE_APT=1 forces it). Prints "[time] N s: step" for every step. Starts NO daemons: the
# pytest fixtures in jupyter_heroes/testing/ start and stop munge, MariaDB, Slurm, sshd, PostgreSQL,
# moto_server, JupyterHub and Chromium themselves, by PID.
#
# Environment: HEROES_TESTBED_NODE (default /opt/heroes-testbed/node) receives the npm packages of
# jupyter_heroes/testing/package.json; PYTHON (default: python on PATH, as scripts/test.sh uses) is the interpreter to install into.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_DIR=${HEROES_TESTBED_NODE:-/opt/heroes-testbed/node}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
APT_PACKAGES=(
  slurm-wlm munge slurmdbd mariadb-server slurm-wlm-jwt-plugin slurmrestd   # Slurm 22.05 + accounting
  openssh-server openssh-client                                               # the cluster's login node
  postgresql                                                                  # the PostgreSQL backend
  chromium chromium-driver                                                    # the browser (Playwright drives it)
  rclone curl                                                                 # data staging tools, probes
)
CHP_VERSION=5.3.0

T0=$EPOCHREALTIME
t() {  # t CMD...: run CMD, print its duration; keeps CMD's exit status
  local s=$EPOCHREALTIME rc=0
  "$@" || rc=$?
  awk -v a="$s" -v b="$EPOCHREALTIME" -v c="$*" 'BEGIN { printf "[time] %6.1f s: %s\n", b - a, c }' >&2
  return $rc
}
die() { echo "install-testbed: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: it installs Debian packages, creates users and writes /etc/slurm"
[ -r /etc/debian_version ] || die "needs Debian 12 (bookworm): the test bed uses Debian's Slurm, OpenSSH, PostgreSQL, Chromium"

# --- Debian packages --------------------------------------------------------------------------------
# policy-rc.d exit 101: package scripts may not start daemons (no systemd here; fixtures start them)
printf '#!/bin/sh\n# written by jupyter_heroes .ci/install-testbed.sh: no daemon starts from apt\nexit 101\n' \
  > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d

missing_apt() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}
apt_install() {
  apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" </dev/null >/dev/null
}
if [ -n "${HEROES_FORCE_APT:-}" ] || [ -n "$(missing_apt)" ]; then
  t apt-get update -qq </dev/null
  t apt_install "${APT_PACKAGES[@]}"
else
  echo "apt: all ${#APT_PACKAGES[@]} packages installed"
fi
[ -z "$(missing_apt)" ] || die "apt packages still missing: $(missing_apt | tr '\n' ' ')"

# Node.js + npm (the OIDC provider and configurable-http-proxy). Debian 12's nodejs is 18; oidc-provider 9
# needs >= 20, so a newer one already on the machine (e.g. a CI image's) is kept.
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  t apt_install nodejs npm
fi
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
[ "$NODE_MAJOR" -ge 20 ] || echo "WARNING: node $(node --version) is older than 20: the OIDC provider (oidc-provider 9) will not run" >&2

# --- npm --------------------------------------------------------------------------------------------
if [ "$(configurable-http-proxy --version 2>/dev/null || true)" != "$CHP_VERSION" ]; then
  t npm install -g --no-audit --no-fund --loglevel=error "configurable-http-proxy@$CHP_VERSION" </dev/null
else
  echo "npm: configurable-http-proxy $CHP_VERSION installed"
fi
mkdir -p "$NODE_DIR"
if ! cmp -s "$REPO/jupyter_heroes/testing/package.json" "$NODE_DIR/package.json" || [ ! -d "$NODE_DIR/node_modules" ]; then
  cp "$REPO/jupyter_heroes/testing/package.json" "$NODE_DIR/package.json"
  (cd "$NODE_DIR" && t npm install --no-audit --no-fund --omit=dev --loglevel=error </dev/null)
else
  echo "npm: $NODE_DIR up to date"
fi

# --- Python -----------------------------------------------------------------------------------------
# Playwright's Python package carries its own driver; the browser is Debian's /usr/bin/chromium, so
# `playwright install` is never run.
# extras test,postgres,notebook,decision: those pyproject.toml declares (numpy & co. may be core by now)
EXTRAS=$("$PYTHON" - "$REPO/pyproject.toml" <<'PY'
import sys
wanted = ["test", "postgres", "notebook", "decision"]
try:
    import tomllib
    with open(sys.argv[1], "rb") as f:
        declared = tomllib.load(f)["project"].get("optional-dependencies", {})
    wanted = [w for w in wanted if w in declared]
except ModuleNotFoundError:  # Python 3.10: no tomllib; ask for all of them
    pass
print(",".join(wanted))
PY
)
(cd "$REPO" && t "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[$EXTRAS]" </dev/null)

# --- checks (no daemon is started) -------------------------------------------------------------------
for exe in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/slurmdbd /usr/sbin/munged /usr/sbin/mariadbd \
           /usr/sbin/sshd /usr/bin/chromium /usr/bin/rclone; do
  [ -x "$exe" ] || die "$exe missing after install"
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || die "PostgreSQL server binaries missing in /usr/lib/postgresql/*/bin"
"$PYTHON" - <<'PY' || die "Python test dependencies are not importable"
import importlib
for mod in ("paramiko", "minio", "moto.server", "psycopg", "playwright.sync_api", "sqlalchemy", "jupyter_heroes.testing.plugin_testbed"):
    importlib.import_module(mod)
PY
echo "versions: $(slurmctld -V) | $(/usr/sbin/sshd -V 2>&1 | head -1) | $(ls -d /usr/lib/postgresql/*/ | xargs -n1 basename | sed 's/^/postgresql /') | $(/usr/bin/chromium --version 2>/dev/null | head -1) | node $(node --version)"
awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "[time] %6.1f s: install-testbed.sh total\n", b - a }' >&2
