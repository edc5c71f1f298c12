"""The API page and the log page describe what the code does (every endpoint, action and reason)."""

from __future__ import annotations

import re
from pathlib import Path

from .endpoints import MODULES, all_ops

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "jupyter_heroes" / "service"


def service_source() -> str:
    """The service's core and the identity/administration resource modules."""
    files = list(SERVICE.glob("*.py")) + [
        SERVICE / "apihandlers" / f"{m.rsplit('.', 1)[1]}.py" for m in MODULES
    ]
    return "\n".join(p.read_text() for p in files)


def test_api_page_lists_every_path() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    for op in all_ops():
        row = next((ln for ln in page.splitlines() if f"`{op.template}`" in ln), None)
        assert row is not None, f"docs/api.md: no row for {op.template}"
        assert op.method.upper() in row, f"docs/api.md: {op.method.upper()} missing for {op.template}"


def test_log_page_decodes_every_action_and_reason() -> None:
    page = (ROOT / "docs" / "admin" / "logs.md").read_text()
    src = service_source()
    actions = {op.ep.action for op in all_ops() if op.ep.action}
    actions |= set(re.findall(r'ecs\(\s*"([a-z]+\.[a-z]+)"', src))
    actions |= set(re.findall(r'action="([a-z]+\.[a-z]+)"', src))
    assert {"user.create", "role.assign", "service.start", "hub.auth", "api.error"} <= actions
    for action in sorted(actions):
        assert f"`{action}" in page, f"docs/admin/logs.md does not explain event.action {action}"
    reasons = set(re.findall(r'ApiError\(\s*\d{3},.*?"([a-z_]+)",?\s*\)', src, re.S))
    reasons |= {"not_authenticated", "internal_error", "not_found"}
    assert {"missing_scope", "idp_managed", "body_too_large", "scope_escalation"} <= reasons
    for reason in sorted(reasons):
        assert f"`{reason}`" in page, f"docs/admin/logs.md does not explain reason {reason}"
