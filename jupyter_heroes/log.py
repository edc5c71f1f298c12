"""Logging in Elastic Common Schema (ECS) shape, with secrets redacted, and the audit trail.

Every HEROES process logs JSON lines that Filebeat/Loki can ship as they are::

    {"@timestamp": "2026-01-02T10:00:00.123Z", "log.level": "info", "message": "...",
     "ecs.version": "8.11.0", "log": {"logger": "heroes.service"},
     "event": {"action": "user.create", "outcome": "success"},
     "http": {"request": {"method": "POST"}, "response": {"status_code": 201}},
     "url": {"path": "/services/heroes/api/v1/organization/admin/users"},
     "user": {"name": "alice"},
     "heroes": {"organization": "acme", "project": "wing", "user": "bob"}}

Fields are passed with ``extra=`` using their dotted ECS names (``extra={"event.action": "x"}``) or
with :func:`ecs` (``log.info("...", extra=ecs(action="x", organization="acme"))``). The
:class:`RedactingFilter` scrubs tokens, passwords, client secrets and private keys from the message,
its arguments and every field, and strips sensitive query parameters from URLs, so nothing secret
reaches a log file whatever a caller passes. ``docs/admin/logs.md`` decodes the messages.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ECS_VERSION = "8.11.0"
REDACTED = "[redacted]"

#: record attributes that carry ECS fields (dotted names), copied into the JSON document
ECS_PREFIXES = ("event.", "http.", "url.", "user.", "heroes.", "client.", "error.", "service.", "source.")

#: names of fields, JSON keys and query parameters whose value is always secret
SENSITIVE_KEYS = frozenset(
    {
        "token",
        "api_token",
        "access_token",
        "refresh_token",
        "id_token",
        "code",
        "state",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "secret_key",
        "private_key",
        "crypt_key",
        "authorization",
        "cookie",
        "set-cookie",
        "_xsrf",
        "x-xsrftoken",
        "jupyterhub_api_token",
        "heroes_crypt_key",
    }
)

_SENSITIVE_KEY_RE = re.compile(
    r"(token|secret|password|passwd|private_?key|crypt_?key|authorization|cookie)", re.I
)

_TEXT_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM / OpenSSH private keys, whole block (also when truncated)
    (
        re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S),
        "[redacted private key]",
    ),
    # Authorization headers: "token abc", "Bearer abc", "Basic abc"
    (re.compile(r"\b(token|bearer|basic)\s+[A-Za-z0-9._~+/=-]{16,}", re.I), r"\1 " + REDACTED),
    # key=value / key: value / "key": "value" pairs for secret-looking keys
    (
        re.compile(
            r"""(?P<k>["']?[A-Za-z0-9_-]*(?:token|secret|password|passwd|private_key|crypt_key|client_secret)"""
            r"""[A-Za-z0-9_-]*["']?\s*[:=]\s*)(?P<q>["']?)(?P<v>[^\s"'&,}]+)""",
            re.I,
        ),
        r"\g<k>\g<q>" + REDACTED,
    ),
    # Fernet tokens (encrypted blobs) and JupyterHub-style 32-hex tokens are harmless but noisy: leave them.
]


def is_sensitive_key(key: str) -> bool:
    k = key.lower()
    return k in SENSITIVE_KEYS or bool(_SENSITIVE_KEY_RE.search(k))


def redact_text(text: str) -> str:
    """Scrub secrets out of free text (a message, an exception, a URL)."""
    for pattern, repl in _TEXT_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def strip_query(url: str, keep: Iterable[str] = ()) -> str:
    """*url* with sensitive query parameters replaced by ``[redacted]`` (others kept)."""
    if "?" not in url:
        return url
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    keep = set(keep)
    cleaned = [(k, v if (k in keep or not is_sensitive_key(k)) else REDACTED) for k, v in pairs]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(cleaned, safe="[]"), ""))


def redact_value(value: Any, key: str = "") -> Any:
    """Scrub a field value: whole value if *key* is sensitive; recurse into dicts and lists."""
    if key and is_sensitive_key(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactingFilter(logging.Filter):
    """Scrub secrets from every record: its message (rendered with its args), ECS fields and
    exception text. Attach it to handlers (not loggers) so records from every library pass through."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = None
        for name in list(vars(record)):
            if name.startswith(ECS_PREFIXES):
                setattr(record, name, redact_value(getattr(record, name), name.rsplit(".", 1)[-1]))
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)))
            record.heroes_exc_type = record.exc_info[0].__name__
            record.heroes_exc_message = redact_text(str(record.exc_info[1]))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def _put(doc: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = doc
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


class EcsJsonFormatter(logging.Formatter):
    """One JSON object per line, ECS field names (top-level ``@timestamp``, ``log.level``, ``message``
    as ecs-logging does, the rest nested)."""

    def __init__(self, service_name: str = "jupyter-heroes") -> None:
        super().__init__()
        self.service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=timezone.utc)
        doc: dict[str, Any] = {
            "@timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "log.level": record.levelname.lower(),
            "message": record.getMessage(),
            "ecs.version": ECS_VERSION,
        }
        _put(doc, "log.logger", record.name)
        _put(doc, "service.name", self.service_name)
        _put(doc, "process.pid", record.process)
        for name, value in vars(record).items():
            if name.startswith(ECS_PREFIXES) and value is not None and value != "":
                _put(doc, name, value)
        exc_type = getattr(record, "heroes_exc_type", None)
        if exc_type:
            _put(doc, "error.type", exc_type)
            _put(doc, "error.message", getattr(record, "heroes_exc_message", ""))
        if record.exc_text:
            _put(doc, "error.stack_trace", record.exc_text)
        elif record.exc_info and record.exc_info[0] is not None:  # formatter used without the filter
            _put(doc, "error.stack_trace", redact_text("".join(traceback.format_exception(*record.exc_info))))
        # ASCII only: no U+2028 or NEL inside a line, whatever a client sent (lines split on "\n" only)
        return json.dumps(doc, default=str)


def ecs(
    action: str | None = None,
    outcome: str | None = None,
    *,
    organization: str | None = None,
    project: str | None = None,
    heroes_user: str | None = None,
    workflow: str | None = None,
    job: str | None = None,
    user: str | None = None,
    method: str | None = None,
    path: str | None = None,
    status: int | None = None,
    duration_ms: float | None = None,
    reason: str | None = None,
    **more: Any,
) -> dict[str, Any]:
    """Build the ``extra=`` mapping of ECS fields for a log call (``None`` values are left out).

    ``more`` takes other dotted ECS names written with ``__`` for dots (``client__ip="1.2.3.4"``).
    """
    fields = {
        "event.action": action,
        "event.outcome": outcome,
        "event.reason": reason,
        "heroes.organization": organization,
        "heroes.project": project,
        "heroes.user": heroes_user,
        "heroes.workflow": workflow,
        "heroes.job": job,
        "user.name": user,
        "http.request.method": method,
        "url.path": path.split("?", 1)[0] if path else None,
        "url.query": strip_query(path).split("?", 1)[1] if path and "?" in path else None,
        "http.response.status_code": status,
        "event.duration": int(duration_ms * 1e6) if duration_ms is not None else None,
    }
    for k, v in more.items():
        fields[k.replace("__", ".")] = v
    return {k: v for k, v in fields.items() if v is not None}


def setup_logging(
    level: int | str = logging.INFO,
    *,
    log_file: str | None = None,
    stream: Any = None,
    service_name: str = "jupyter-heroes",
    loggers: Iterable[str] = ("",),
) -> list[logging.Handler]:
    """Send every record of *loggers* (default: the root logger) as redacted ECS JSON lines to
    *stream* (default stderr) and, if given, *log_file* (appended). Returns the handlers installed."""
    formatter = EcsJsonFormatter(service_name)
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for h in handlers:
        h.addFilter(RedactingFilter())
        h.setFormatter(formatter)
    for name in loggers:
        lg = logging.getLogger(name)
        for old in list(lg.handlers):
            if isinstance(old.formatter, EcsJsonFormatter):
                lg.removeHandler(old)
                old.close()
        for h in handlers:
            lg.addHandler(h)
        lg.setLevel(level)
    return handlers


#: logger for audit lines (one per mutating API call); the same content is stored in ``audit_log``
audit_log = logging.getLogger("heroes.audit")
