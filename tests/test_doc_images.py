"""The screenshots in the docs are the ones the browser tests take.

``scripts/update-doc-screenshots.sh`` runs the browser tests and copies the screenshots the docs use
from ``test-artifacts/screenshots/`` into ``docs/images/``. These checks keep the two honest: every
image a page shows exists, is a real PNG, and is saved by some test under that very name (so no
image in the docs was drawn by hand or left behind by a test that no longer exists).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
IMAGES = DOCS / "images"
REF = re.compile(r"\]\(((?:\.\./)*images/([A-Za-z0-9_.-]+\.png))\)")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _references() -> list[tuple[Path, str, str]]:
    refs = []
    for page in sorted(DOCS.rglob("*.md")):
        for m in REF.finditer(page.read_text(encoding="utf-8")):
            refs.append((page, m.group(1), m.group(2)))
    return refs


def _test_sources() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "tests").rglob("test_*.py")))


def test_the_user_admin_and_vendor_guides_show_screenshots():
    pages = {page.relative_to(DOCS).parts[0] for page, _, _ in _references()}
    assert {"user", "admin", "vendor"} <= pages, pages


def test_every_referenced_image_exists_where_the_page_points():
    missing = [
        f"{page.relative_to(ROOT)}: {target}"
        for page, target, _ in _references()
        if not (page.parent / target).resolve().is_file()
    ]
    assert not missing, "run bash scripts/update-doc-screenshots.sh:\n" + "\n".join(missing)


def test_every_image_is_a_png_a_test_saves():
    sources = _test_sources()
    names = sorted(p.name for p in IMAGES.glob("*.png"))
    assert names, "docs/images holds no screenshots"
    for name in names:
        assert (IMAGES / name).read_bytes()[:8] == PNG_MAGIC, f"{name} is not a PNG"
        stem = name.removesuffix(".png")
        assert re.search(rf"[\"'/]{re.escape(stem)}(\.png)?[\"']", sources) or _by_pattern(stem, sources), (
            f"docs/images/{name}: no test saves a screenshot of that name; remove it or add the test"
        )


def _by_pattern(stem: str, sources: str) -> bool:
    """A test that builds the name, e.g. ``f"dashboard-{step}.png"``: its literal prefix matches."""
    for m in re.finditer(r"f[\"']([A-Za-z0-9_-]+)\{", sources):
        if stem.startswith(m.group(1)):
            return True
    return False


def test_no_image_sits_unused():
    used = {name for _, _, name in _references()}
    unused = sorted(p.name for p in IMAGES.glob("*.png") if p.name not in used)
    assert not unused, f"docs/images holds images no page shows: {unused}"
