"""``pip install`` is enough: the wheel installs the server config that enables the extension and the
prebuilt lab extension where Jupyter looks for them (``etc/jupyter``, ``share/jupyter/labextensions``).

Builds a real wheel of this checkout (pip, with build isolation: it fetches the build backend from
PyPI, cached after the first run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import pytest

from jupyter_heroes.serverext.testing import LABEXTENSION_DIR, REPO_DIR

pytestmark = pytest.mark.timeout(300)

LAB = "share/jupyter/labextensions/jupyter-heroes"
SERVER_CONFIG = "etc/jupyter/jupyter_server_config.d/jupyter_heroes.json"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "node_modules")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO_DIR / name, src / name)
    for name in ("jupyter_heroes", "jupyter-config"):
        shutil.copytree(REPO_DIR / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    cp = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    (path,) = out.glob("jupyter_heroes-*.whl")
    return zipfile.ZipFile(path)


def data_files(wheel: zipfile.ZipFile) -> dict[str, str]:
    """Installed path (relative to the prefix) -> name in the wheel, for the wheel's data files."""
    files = {}
    for name in wheel.namelist():
        parts = name.split("/", 3)
        if len(parts) == 4 and parts[0].endswith(".data") and parts[1] == "data":
            files[parts[2] + "/" + parts[3]] = name
    return files


def test_wheel_enables_the_server_extension(wheel):
    files = data_files(wheel)
    assert SERVER_CONFIG in files, sorted(files)
    config = json.loads(wheel.read(files[SERVER_CONFIG]))
    assert config == {"ServerApp": {"jpserver_extensions": {"jupyter_heroes.serverext": True}}}
    assert "jupyter_heroes/serverext/app.py" in wheel.namelist()


def test_wheel_installs_the_prebuilt_lab_extension(wheel):
    files = data_files(wheel)
    shipped = sorted(
        p.relative_to(LABEXTENSION_DIR).as_posix() for p in LABEXTENSION_DIR.rglob("*") if p.is_file()
    )
    assert "install.json" in shipped and "package.json" in shipped
    for rel in shipped:
        assert f"{LAB}/{rel}" in files, f"{rel} of {LABEXTENSION_DIR} is not installed into {LAB}"
    meta = json.loads(wheel.read(files[f"{LAB}/package.json"]))
    assert meta["name"] == "jupyter-heroes"
    assert f"{LAB}/{meta['jupyterlab']['_build']['load']}" in files  # the remoteEntry JupyterLab loads
    install = json.loads(wheel.read(files[f"{LAB}/install.json"]))
    assert install["packageName"] == "jupyter_heroes"


def test_prebuilt_lab_extension_matches_its_source():
    """A change of dependencies or version in labextension/package.json needs a rebuild (npm run build:prod)."""
    source = json.loads((REPO_DIR / "labextension" / "package.json").read_text())
    built = json.loads((LABEXTENSION_DIR / "package.json").read_text())
    for key in ("name", "version", "dependencies"):
        assert built[key] == source[key], (
            f"{key} differs: rebuild with `cd labextension && npm run build:prod`"
        )
    # production build: minimized, no source maps, small
    static = list((LABEXTENSION_DIR / "static").iterdir())
    assert not [p.name for p in static if p.suffix == ".map"]
    total = sum(p.stat().st_size for p in static)
    assert total < 200_000, f"the prebuilt lab extension is {total} bytes: a development build?"
