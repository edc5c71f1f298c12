"""The one Python client of the HEROES REST API: the magics, the widgets, the notebooks and the
``heroes`` workflow commands all call the service through :class:`HeroesClient`.

::

    from jupyter_heroes.client import HeroesClient

    client = HeroesClient()                      # in a JupyterHub single-user server: no arguments
    client.templates()                           # [{"name": "monte-carlo-pi", "parameters": {...}}, ...]
    inst = client.submit("monte-carlo-pi", {"samples": 100000}, cluster="local")
    for event in client.events(instance=inst["id"]):
        print(event["type"], event["state"])
        if event["type"] in ("instance", "snapshot") and event["state"] in FINAL_STATES:
            break

Where the service is and who calls it come from the environment of a single-user server
(:func:`default_service_url`, :func:`default_token`); the organization from
``X-Heroes-Organization`` (*organization*, default ``$HEROES_ORGANIZATION``; a member of one
organization needs none).

Every call goes through :meth:`HeroesClient.request`, which applies the timeouts, retries idempotent
reads the service could not answer (it is restarting, the proxy lost its route), logs method, path and
status (never the token, never a query string), and turns every failure into :class:`HeroesError` with
the service's own ``message`` and ``reason``. Each thread gets its own HTTP session, so a widget may
follow an event stream in a background thread while the notebook submits in the foreground.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("jupyter_heroes.client")

SERVICE_NAME = "heroes"
API_PATH = "api/v1"
ORG_HEADER = "X-Heroes-Organization"
#: states of a workflow instance that never change again
FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
#: states of a job (a step) that never change again
FINAL_JOB_STATES = frozenset({"completed", "failed", "cancelled", "timeout", "node_fail", "out_of_memory"})
#: HTTP statuses worth retrying an idempotent request for (the service or its route is coming back)
TRANSIENT_STATUSES = frozenset({502, 503, 504})


class HeroesError(Exception):
    """A call to the HEROES service failed.

    ``message`` says what to do (the service's own message when it answered), ``reason`` is a short
    stable code (the service's ``reason``, or ``unreachable``, ``timeout``, ``bad_response``,
    ``no_service_url``, ``no_token``, ``not_available``), ``status`` the HTTP status (``None`` when
    there was no answer). ``transient`` says whether trying again later can help.
    """

    def __init__(self, message: str, reason: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status

    @property
    def transient(self) -> bool:
        if self.status is None:
            return self.reason in ("unreachable", "timeout")
        return self.status in TRANSIENT_STATUSES

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"HeroesError({self.message!r}, reason={self.reason!r}, status={self.status!r})"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def default_service_url(env: Mapping[str, str] | None = None) -> str:
    """Where the HEROES service is ('' if the environment does not say), like the server extension:

    1. ``$HEROES_SERVICE_URL`` (``install_heroes`` sets it for every single-user server);
    2. the hub's public address (``$JUPYTERHUB_PUBLIC_HUB_URL``, set when the hub's
       ``c.JupyterHub.public_url`` is) + ``$JUPYTERHUB_BASE_URL`` + ``services/heroes/``;
    3. the origin of ``$JUPYTERHUB_API_URL`` + ``$JUPYTERHUB_BASE_URL`` + ``services/heroes/`` (right
       when the hub's API is reached through its proxy, as in most Kubernetes deployments).
    """
    env = os.environ if env is None else env
    explicit = env.get("HEROES_SERVICE_URL", "").strip()
    if explicit:
        return explicit
    base = env.get("JUPYTERHUB_BASE_URL", "").strip() or "/"
    if not base.endswith("/"):
        base += "/"
    for name in ("JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_API_URL"):
        value = env.get(name, "").strip()
        if value and urlsplit(value).netloc:
            return f"{_origin(value)}{base}services/{SERVICE_NAME}/"
    return ""


def default_token(env: Mapping[str, str] | None = None) -> str:
    """``$HEROES_API_TOKEN``, else ``$JUPYTERHUB_API_TOKEN`` (a single-user server's own token, which
    acts as its user and carries ``access:services!service=heroes``); '' if neither is set."""
    env = os.environ if env is None else env
    return env.get("HEROES_API_TOKEN", "").strip() or env.get("JUPYTERHUB_API_TOKEN", "").strip()


def service_root(url: str) -> str:
    """*url* (the service's address, or its API's) as the service root ending in '/'."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HeroesError(
            f"the HEROES service URL {url!r} is not an http:// or https:// URL; pass one like "
            "http://127.0.0.1:10101/services/heroes/ (or set $HEROES_SERVICE_URL)",
            "no_service_url",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise HeroesError(
            "the HEROES service URL must not hold a query, fragment or credentials; pass the token as "
            "token= (or $JUPYTERHUB_API_TOKEN)",
            "no_service_url",
        )
    path = parts.path.rstrip("/")
    if path.endswith("/" + API_PATH):
        path = path[: -len(API_PATH) - 1]
    return urlunsplit((parts.scheme, parts.netloc, path + "/", "", ""))


def split_budget(text: str | None) -> tuple[str | None, str | None]:
    """A command line's budget limit (``"5 EUR"``, ``"5"``) as the decision's ``budget`` and
    ``budget_currency`` (None when not given; the service checks the amount and the currency)."""
    if not text or not text.strip():
        return None, None
    amount, _, unit = text.strip().partition(" ")
    return amount, (unit.strip().upper() or None)


def resources_from_flags(walltimes: list[str], memories: list[str]) -> dict[str, dict[str, Any]]:
    """``--walltime STEP=HH:MM:SS`` and ``--memory STEP=MB`` as the submission's ``resources``
    (``{step: {"walltime": ..., "memory_mb": ...}}``), for the command-line faces (``%heroes submit``,
    ``heroes submit``); a :class:`HeroesError` (reason ``usage``) for anything else. The service
    checks the steps and the queue's limits."""
    out: dict[str, dict[str, Any]] = {}
    for flag, key, items in (("--walltime", "walltime", walltimes), ("--memory", "memory_mb", memories)):
        example = "--walltime solve=01:30:00" if key == "walltime" else "--memory solve=2048"
        for item in items:
            step, sep, value = item.partition("=")
            step, value = step.strip(), value.strip()
            if not sep or not step or not value:
                raise HeroesError(
                    f"{flag} takes STEP=VALUE, got {item!r}; for example {example}", "usage", 400
                )
            if key in out.get(step, {}):
                raise HeroesError(
                    f"{flag} is given twice for step {step!r}; give it once per step", "usage", 400
                )
            what = (
                "memory is a positive whole number of MB per node"
                if key == "memory_mb"
                else ("walltime is a positive number of seconds or [D-]HH:MM:SS")
            )
            if (key == "memory_mb" or value.isdigit()) and not (value.isdigit() and int(value) >= 1):
                raise HeroesError(f"{flag} {step}={value}: {what}; for example {example}", "usage", 400)
            out.setdefault(step, {})[key] = int(value) if value.isdigit() else value
    return out


def typed_params(template: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Convert text values (``samples=1000`` on a command line) to the types *template* declares for
    them: integers, numbers, booleans (true/false, yes/no, on/off, 1/0). A value that does not convert,
    or a name the template does not declare, is passed on unchanged so that the service refuses it
    with the parameter's name and the rule."""
    decls = template.get("parameters") or {}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        kind = (decls.get(name) or {}).get("type")
        out[name] = _convert(kind, value) if isinstance(value, str) else value
    return out


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _convert(kind: str | None, text: str) -> Any:
    t = text.strip()
    try:
        if kind == "integer":
            return int(t.replace("_", ""))
        if kind == "number":
            return float(t.replace("_", ""))
    except ValueError:
        return text
    if kind == "boolean":
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
    return text


class EventStream:
    """The service's progress events (``/organization/workflow/events``) as an iterator of dicts.

    Each event is the JSON the service sends: ``type`` (``snapshot``, ``instance`` or ``job``),
    ``instance``, ``state``; job events add ``step``, ``reason``, ``job_id``, ``exit_code``; snapshot
    events carry the whole instance in ``data``. The service ends a stream after its ``timeout``;
    with *reconnect* the iterator opens a new one (which begins with fresh snapshots), and after a
    dropped connection it retries with backoff, up to *max_failures* failures in a row. :meth:`close`
    (from any thread) ends the iteration.
    """

    def __init__(
        self,
        client: HeroesClient,
        params: dict[str, Any],
        *,
        reconnect: bool = True,
        max_failures: int = 8,
        read_timeout: float = 45.0,
    ) -> None:
        self.client = client
        self.params = params
        self.reconnect = reconnect
        self.max_failures = max_failures
        self.read_timeout = read_timeout
        self.connections = 0
        self._closed = threading.Event()
        self._response: requests.Response | None = None
        self._iter = self._events()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._iter)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Stop the iteration; a thread blocked reading the stream wakes up at once."""
        self._closed.set()
        resp = self._response
        if resp is not None:
            sock = _response_socket(resp)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _events(self) -> Iterator[dict[str, Any]]:
        failures = 0
        session = self.client._new_session()
        try:
            while not self.closed:
                try:
                    resp = self.client.request(
                        "GET",
                        "/organization/workflow/events",
                        params=self.params,
                        stream=True,
                        accept="text/event-stream",
                        timeout=(self.client.connect_timeout, self.read_timeout),
                        session=session,
                        retries=0,
                    )
                except HeroesError as e:
                    if self.closed:
                        return
                    if not (self.reconnect and e.transient) or failures >= self.max_failures:
                        raise
                    failures += 1
                    self._closed.wait(min(30.0, 0.5 * 2**failures))
                    continue
                self._response = resp
                self.connections += 1
                dropped = False
                try:
                    for event in _parse_sse(resp, self._closed):
                        failures = 0
                        yield event
                except (requests.RequestException, OSError, ValueError) as e:
                    dropped = True
                    if not self.closed:
                        log.info("event stream dropped (%s); reconnecting", type(e).__name__)
                finally:
                    self._response = None
                    resp.close()
                if self.closed or not self.reconnect:
                    return
                if dropped:
                    failures += 1
                    if failures > self.max_failures:
                        raise HeroesError(
                            f"the HEROES event stream failed {failures} times in a row; check that the "
                            f"service at {self.client.service_url} is up, then follow the workflow again",
                            "unreachable",
                        )
                    self._closed.wait(min(30.0, 0.5 * 2**failures))
        finally:
            session.close()


def _response_socket(resp: requests.Response) -> socket.socket | None:
    try:
        conn = resp.raw.connection  # urllib3 2.x
        return conn.sock if conn is not None else None
    except AttributeError:
        return None


def _parse_sse(resp: requests.Response, closed: threading.Event) -> Iterator[dict[str, Any]]:
    """Server-sent events of *resp*: the JSON of each event's ``data:`` lines. Comments
    (``: keep-alive``) and events whose data is not a JSON object are skipped."""
    buf = b""
    data: list[str] = []
    for chunk in resp.iter_content(chunk_size=None):
        if closed.is_set():
            return
        buf += chunk
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                if data:
                    try:
                        event = json.loads("\n".join(data))
                    except ValueError:
                        event = None
                    data = []
                    if isinstance(event, dict):
                        yield event
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value[1:] if value.startswith(" ") else value)


class HeroesClient:
    """A client of the HEROES REST API (see the module docstring).

    *url*: the service (``http://host/services/heroes/``) or its API (``.../api/v1``); default
    :func:`default_service_url`. *token*: a JupyterHub API token with
    ``access:services!service=heroes``; default :func:`default_token`. *organization*: sent as
    ``X-Heroes-Organization`` (default ``$HEROES_ORGANIZATION``). *timeout*: seconds for one request
    (connecting: *connect_timeout*). *retries*: how often a GET is retried when the service did not
    answer or answered 502/503/504.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        organization: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retries: int = 2,
        verify: bool | str = True,
    ) -> None:
        url = url if url is not None else default_service_url()
        if not url:
            raise HeroesError(
                "where is the HEROES service? Set $HEROES_SERVICE_URL to https://<hub>/services/heroes/ (in a "
                "JupyterHub server install_heroes sets it), or pass it (url=... in Python, --url to the heroes "
                "command)",
                "no_service_url",
            )
        self.service_url = service_root(url)
        self.api_url = self.service_url + API_PATH
        token = token if token is not None else default_token()
        if not token:
            raise HeroesError(
                "no API token: set $JUPYTERHUB_API_TOKEN to a token from the hub's Token page (/hub/token), "
                "or pass one (token=... in Python, --token to the heroes command)",
                "no_token",
            )
        self._token = token
        org = organization if organization is not None else os.environ.get("HEROES_ORGANIZATION", "")
        self.organization = org.strip() or None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.verify = verify
        self._local = threading.local()
        self._lock = threading.Lock()
        self._openapi: dict[str, Any] | None = None
        self._templates: dict[tuple[str, str | None], list[dict[str, Any]]] = {}

    def __repr__(self) -> str:  # never the token
        org = f", organization={self.organization!r}" if self.organization else ""
        return f"HeroesClient({self.service_url!r}{org})"

    def with_organization(self, organization: str | None) -> HeroesClient:
        """A client for the same service and token acting in another organization."""
        other = HeroesClient(
            self.service_url,
            self._token,
            organization or "",
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            retries=self.retries,
            verify=self.verify,
        )
        other._openapi = self._openapi
        return other

    # --- the choke point ---------------------------------------------------------------------------
    def _new_session(self) -> requests.Session:
        s = requests.Session()
        # not trust_env: requests would replace our Authorization header with a ~/.netrc entry for
        # the host; proxies and the CA bundle are still taken from the environment, explicitly
        s.trust_env = False
        s.proxies = requests.utils.get_environ_proxies(self.api_url)
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        s.verify = ca_bundle if self.verify is True and ca_bundle else self.verify
        s.headers["Authorization"] = f"token {self._token}"
        s.headers["Accept"] = "application/json"
        s.headers["User-Agent"] = "jupyter-heroes-client"
        return s

    @property
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = self._new_session()
        return s

    def close(self) -> None:
        """Close this thread's HTTP session (others close with their threads)."""
        s = getattr(self._local, "session", None)
        if s is not None:
            s.close()
            self._local.session = None

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: bytes | IO[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        accept: str | None = None,
        timeout: float | tuple[float, float] | None = None,
        retries: int | None = None,
        session: requests.Session | None = None,
        parse: bool = True,
    ) -> Any:
        """Call ``<api>/<path>``; the parsed JSON answer (``None`` for 204), the text of a non-JSON
        answer, or the open :class:`requests.Response` with *stream* (the caller closes it). *data*
        is a raw body (bytes or a file opened in binary mode, sent as it is read). Failures raise
        :class:`HeroesError`."""
        method = method.upper()
        url = self.api_url + "/" + path.lstrip("/")
        hdrs = dict(headers or {})
        if self.organization:
            hdrs[ORG_HEADER] = self.organization
        if json_body is not None:
            data = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        if accept:
            hdrs["Accept"] = accept
        tries = 1 + (self.retries if retries is None else retries) if method == "GET" else 1
        to = timeout if timeout is not None else (self.connect_timeout, self.timeout)
        s = session or self._session
        for attempt in range(tries):
            t0 = time.monotonic()
            try:
                r = s.request(
                    method,
                    url,
                    params=dict(params) if params else None,
                    data=data,
                    headers=hdrs,
                    timeout=to,
                    stream=stream,
                    allow_redirects=False,
                )
            except requests.Timeout:
                err = HeroesError(
                    f"the HEROES service at {self.service_url} did not answer {method} {path} in time; "
                    "try again (it may be busy or restarting)",
                    "timeout",
                )
            except requests.RequestException as e:
                err = HeroesError(
                    f"cannot reach the HEROES service at {self.service_url} ({type(e).__name__}); check "
                    "the URL and that the hub is running, then try again",
                    "unreachable",
                )
            else:
                log.debug("%s %s -> %s (%.2f s)", method, path, r.status_code, time.monotonic() - t0)
                if r.status_code < 400:
                    if stream:
                        return r
                    return self._answer(r, method, path) if parse else r
                err = self._error(r, method, path)
                r.close()
            if not err.transient or attempt == tries - 1:
                log.info("%s %s failed: %s (%s)", method, path, err.reason, err.status or "no answer")
                raise err
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("not reached")  # pragma: no cover

    def _answer(self, r: requests.Response, method: str, path: str) -> Any:
        if r.status_code == 204 or not r.content:
            return None
        ctype = r.headers.get("Content-Type", "")
        if "json" in ctype:
            try:
                return r.json()
            except ValueError:
                raise HeroesError(
                    f"the HEROES service answered {method} {path} with malformed JSON; report this to "
                    "your administrator",
                    "bad_response",
                    r.status_code,
                ) from None
        return r.text

    def _error(self, r: requests.Response, method: str, path: str) -> HeroesError:
        try:
            body = r.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return HeroesError(body["message"], str(body.get("reason") or "error"), r.status_code)
        if r.status_code in TRANSIENT_STATUSES:
            msg = (
                f"the HEROES service is not available ({r.status_code} from the hub's proxy for {method} "
                f"{path}); it may be restarting: try again in a minute"
            )
        elif r.status_code in (401, 403):
            msg = (
                f"the hub refused the token ({r.status_code}); it needs the scope "
                f"access:services!service={SERVICE_NAME}: create a new token on the hub's Token page"
            )
        else:
            msg = (
                f"the HEROES service answered {method} {path} with {r.status_code} and no JSON error; "
                f"check that {self.service_url} is the HEROES service"
            )
        return HeroesError(msg, f"http_{r.status_code}", r.status_code)

    # --- what the service offers -------------------------------------------------------------------
    def openapi(self) -> dict[str, Any]:
        """The service's OpenAPI document (cached)."""
        with self._lock:
            cached = self._openapi
        if cached is None:
            doc = self.request("GET", "/openapi.json")
            if not isinstance(doc, dict) or "paths" not in doc:
                raise HeroesError(
                    f"{self.api_url}/openapi.json is not an OpenAPI document; check the service URL",
                    "bad_response",
                )
            with self._lock:
                self._openapi = cached = doc
        return cached

    def has_endpoint(self, path: str, method: str = "get") -> bool:
        """Whether the service serves *method* on *path* (as written in its OpenAPI document)."""
        return method.lower() in self.openapi().get("paths", {}).get(path, {})

    def _require(self, path: str, method: str, what: str) -> None:
        if not self.has_endpoint(path, method):
            raise HeroesError(
                f"this HEROES service has no {what} endpoint ({method.upper()} {path}); it is newer in "
                "jupyter_heroes than the service you use: ask your administrator to upgrade the service",
                "not_available",
                404,
            )

    # --- identity ----------------------------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        """The caller: ``name``, ``organizations`` (each with roles, projects, scopes) and more."""
        return self.request("GET", "/organization/auth/me")

    # --- workflows ---------------------------------------------------------------------------------
    def templates(self) -> list[dict[str, Any]]:
        """The templates you may run, newest version first per name: ``name``, ``version``,
        ``description``, ``parameters`` (name -> declaration), ``steps``."""
        out = self.request("GET", "/organization/workflow/template")
        with self._lock:
            self._templates[(self.service_url, self.organization)] = out
        return out

    def template(self, name: str, version: int | None = None, *, cached: bool = False) -> dict[str, Any]:
        """One template (its newest version unless *version*); 404 ``not_found`` naming the templates
        there are when it does not exist."""
        with self._lock:
            listing = self._templates.get((self.service_url, self.organization)) if cached else None

        def match(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [t for t in items if t["name"] == name and (version is None or t["version"] == version)]

        found = match(listing) if listing is not None else []
        if not found:  # not cached, or published since
            listing = self.templates()
            found = match(listing)
        assert listing is not None
        if not found:
            names = sorted({t["name"] for t in listing})
            which = f"workflow template '{name}'" + (f" version {version}" if version is not None else "")
            raise HeroesError(
                f"{which} not found; the templates you may run are: {', '.join(names) or 'none'}",
                "not_found",
                404,
            )
        return max(found, key=lambda t: t["version"])

    def submit(
        self,
        template: str,
        params: Mapping[str, Any] | None = None,
        *,
        cluster: str,
        queue: str | None = None,
        project: str | None = None,
        version: int | None = None,
        decision: str | None = None,
        resources: Mapping[str, Mapping[str, Any]] | None = None,
        accept_advice: bool = False,
    ) -> dict[str, Any]:
        """Submit *template* with *params* (validated by the service against the template) to
        *cluster* (``provider/cluster`` for a vendor's offer); the new instance (state
        ``submitting``). *decision*: the id of the :meth:`decide` answer this follows
        (``df.attrs["decision"]``): the service records whether you took its recommendation and
        reserves budget for its predicted cost instead of the walltime's upper bound.

        *resources*: per step, the walltime (seconds or ``"HH:MM:SS"``) and/or memory (``memory_mb``,
        MB per node) to ask for instead of the template's, e.g. ``{"solve": {"walltime": "00:20:00"}}``.
        *accept_advice*: ask for the walltime and memory *decision* advised for this cluster and
        queue (*resources* still wins). The instance's ``resources`` shows what each step asks for
        and where it comes from."""
        body: dict[str, Any] = {"template": template, "cluster": cluster, "params": dict(params or {})}
        if accept_advice and not decision:
            raise HeroesError(
                "accept_advice=True applies the advice of a decision: pass decision=df.attrs['decision'] "
                "from client.decide(...), or leave accept_advice out",
                "advice_without_decision",
                400,
            )
        if decision:
            body["decision"] = decision
        if accept_advice:
            body["accept_advice"] = True
        if resources:
            body["resources"] = {str(k): dict(v) for k, v in resources.items()}
        if queue:
            body["queue"] = queue
        if project:
            body["project"] = project
        if version is not None:
            body["version"] = version
        return self.request("POST", "/organization/workflow/submit", json_body=body)

    def instances(self, state: str = "all", limit: int = 100) -> list[dict[str, Any]]:
        """Your workflow instances, newest first; *state*: ``live``, ``final`` or ``all``."""
        return self.request("GET", "/organization/workflow/instance", params={"state": state, "limit": limit})

    def instance(self, instance_id: str) -> dict[str, Any]:
        """A workflow instance with its ``jobs`` (one per step: state, reason, job_id, exit_code,
        accounting with ``outputs``)."""
        return self.request("GET", f"/organization/workflow/instance/{_seg(instance_id)}")

    def cancel(self, instance_id: str) -> dict[str, Any]:
        """Cancel every live step of the instance; the instance as it is afterwards."""
        return self.request("DELETE", f"/organization/workflow/instance/{_seg(instance_id)}")

    def logs(
        self, instance_id: str, step: str | None = None, *, stream: str = "out", task: int = 0
    ) -> dict[str, Any]:
        """The end of a step's standard output (*stream* ``out``) or error (``err``):
        ``{"step", "stream", "text"}``; *step* defaults to the first step."""
        params: dict[str, Any] = {"stream": stream, "task": task}
        if step:
            params["step"] = step
        return self.request("GET", f"/organization/workflow/instance/{_seg(instance_id)}/logs", params=params)

    def events(
        self,
        instance: str | None = None,
        *,
        timeout: float = 300.0,
        reconnect: bool = True,
        max_failures: int = 8,
    ) -> EventStream:
        """Progress events of your live workflows (or of *instance*) as an iterator of dicts, see
        :class:`EventStream`. *timeout*: seconds the service keeps one stream open."""
        params: dict[str, Any] = {"timeout": timeout}
        if instance:
            params["instance"] = instance
        return EventStream(self, params, reconnect=reconnect, max_failures=max_failures)

    def wait(self, instance_id: str, timeout: float = 3600.0, *, poll: float = 2.0) -> dict[str, Any]:
        """Block until the instance is in a final state (following the event stream, checking with a
        GET every *poll* seconds in case an event is missed); the final instance. 504 ``timeout``
        :class:`HeroesError` after *timeout* seconds."""
        deadline = time.monotonic() + timeout
        done = threading.Event()
        stream = self.events(instance_id, timeout=min(timeout, 3600.0))

        def follow() -> None:
            try:
                for ev in stream:
                    if ev.get("type") in ("instance", "snapshot") and ev.get("state") in FINAL_STATES:
                        done.set()
                        return
            except HeroesError:
                pass  # the polling below still sees the end

        t = threading.Thread(target=follow, name=f"heroes-wait-{instance_id[:8]}", daemon=True)
        t.start()
        try:
            while True:
                inst = self.instance(instance_id)
                if inst["state"] in FINAL_STATES:
                    return inst
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HeroesError(
                        f"workflow {instance_id} is still {inst['state']} after {timeout:.0f} s; wait longer "
                        "or look at its jobs with instance()",
                        "timeout",
                        504,
                    )
                done.wait(min(poll, left))
        finally:
            stream.close()

    # --- clusters ----------------------------------------------------------------------------------
    def clusters(self) -> list[dict[str, Any]]:
        """The organization's enrolled clusters with their queues (needs ``clusters:manage``)."""
        return self.request("GET", "/organization/admin/cluster")

    def workflow_clusters(self) -> list[dict[str, Any]]:
        """Where you may submit (needs only ``submit``): your organization's clusters and the
        provider clusters of its enabled offers (``cluster`` is then ``provider/cluster``; one entry per
        offer), each with ``queues`` (name, limits), ``own`` and, for offers, ``offer`` (id, name,
        version, currency, price, terms)."""
        return self.request("GET", "/organization/workflow/clusters")

    def cluster_choices(self) -> dict[str, list[str]]:
        """Cluster name -> queue names you can submit to (:meth:`workflow_clusters`: your
        organization's clusters and those of its enabled offers)."""
        out: dict[str, list[str]] = {}
        for entry in self.workflow_clusters():  # one entry per own cluster, one per enabled offer
            queues = out.setdefault(entry["cluster"], [])
            queues += [q["name"] for q in entry.get("queues", []) if q["name"] not in queues]
        return out

    # --- data (the organization's object store) ----------------------------------------------------
    DATA_PREFIX = "/organization/data"

    def buckets(self) -> list[dict[str, Any]]:
        """The buckets you may use: ``name``, ``kind`` (user/project), ``owner``, ``mine``."""
        self._require(self.DATA_PREFIX + "/list", "get", "data")
        return self.request("GET", self.DATA_PREFIX + "/list")

    def home_bucket(self, create: bool = True) -> str:
        """Your own bucket (where workflow outputs go), created if missing and *create*."""
        for b in self.buckets():
            if b.get("kind") == "user" and b.get("mine"):
                return str(b["name"])
        if not create:
            raise HeroesError(
                "you have no bucket yet in this organization; upload a file (or create_bucket()) to make it",
                "not_found",
                404,
            )
        return str(self.create_bucket()["name"])

    def create_bucket(
        self, kind: str = "user", owner: str | None = None, *, exist_ok: bool = True
    ) -> dict[str, Any]:
        """Create your bucket (or a project's: ``kind="project", owner=<project>``)."""
        body: dict[str, Any] = {"kind": kind, "exist_ok": exist_ok}
        if owner:
            body["owner"] = owner
        return self.request("POST", self.DATA_PREFIX + "/bucket", json_body=body)

    def bucket_size(self, bucket: str | None = None) -> dict[str, Any]:
        """``{"bucket", "bytes", "objects"}`` of *bucket* (default: yours)."""
        return self.request(
            "GET", self.DATA_PREFIX + "/size", params={"bucket": bucket or self.home_bucket()}
        )

    def ls(self, prefix: str = "", bucket: str | None = None, *, recursive: bool = False) -> dict[str, Any]:
        """Objects under *prefix* in *bucket* (default: yours), every page: ``{"bucket", "prefix",
        "objects": [{key, size, last_modified, ...}], "folders": [...]}``; *recursive* lists the
        keys of sub-folders instead of rolling them up."""
        bucket = bucket or self.home_bucket()
        objects: list[dict[str, Any]] = []
        folders: list[str] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"prefix": prefix, "delimiter": "" if recursive else "/"}
            if token:
                params["continuation"] = token
            page = self.request("GET", f"{self.DATA_PREFIX}/bucket/{_seg(bucket)}/list", params=params)
            objects += page.get("objects", [])
            folders += page.get("folders", [])
            token = page.get("next")
            if not token:
                return {"bucket": bucket, "prefix": prefix, "objects": objects, "folders": folders}

    def download(
        self, key: str, dest: str | os.PathLike[str] | None = None, bucket: str | None = None
    ) -> Any:
        """Object *key* of *bucket* (default: yours): its bytes, or, with *dest*, written to that file
        (through a temporary file renamed at the end: a failed download leaves nothing) and its path.
        The length and the recorded SHA-256 are checked."""
        import hashlib
        import tempfile
        from pathlib import Path

        bucket = bucket or self.home_bucket()
        r = self.request(
            "GET",
            self.DATA_PREFIX + "/download",
            params={"bucket": bucket, "key": key},
            stream=True,
            accept="application/octet-stream",
        )
        digest = hashlib.sha256()
        size = 0
        expected = r.headers.get("Content-Length")
        sha = r.headers.get("X-Heroes-Sha256")
        target = Path(dest) if dest is not None else None
        tmp: Any = None
        buf = bytearray()
        try:
            if target is not None:
                if target.is_dir():
                    target = target / key_name(key)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False)
            try:
                for chunk in r.iter_content(chunk_size=1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    if tmp is not None:
                        tmp.write(chunk)
                    else:
                        buf += chunk
            except (requests.RequestException, OSError) as e:
                raise HeroesError(
                    f"the download of {bucket}/{key} broke off after {size} bytes ({type(e).__name__}); try again",
                    "unreachable",
                ) from None
            if expected is not None and int(expected) != size:
                raise HeroesError(
                    f"the download of {bucket}/{key} ended after {size} of {expected} bytes (the object may "
                    "have been replaced meanwhile); try again",
                    "incomplete_download",
                )
            if sha and sha != digest.hexdigest():
                raise HeroesError(
                    f"{bucket}/{key} arrived with another SHA-256 than the store recorded; try again",
                    "checksum_mismatch",
                )
            if tmp is None:
                return bytes(buf)
            tmp.close()
            assert target is not None
            os.replace(tmp.name, target)
            tmp = None
            return target
        finally:
            r.close()
            if tmp is not None:
                tmp.close()
                os.unlink(tmp.name)

    def download_results(
        self, instance_id: str, dest: str | os.PathLike[str] | None = None, *, parallel: int = 4
    ) -> dict[str, Any]:
        """Copy the outputs of workflow *instance_id* (every object under ``results/<id>/`` in your
        bucket) into the directory *dest* (default ``./<id>``), keeping their paths below
        ``results/<id>/``. A file already there with the same content (its size and the store's ETag,
        see :mod:`jupyter_heroes.etag`) is kept, so a second run after an interruption fetches only
        what is missing. Each download is checked as :meth:`download` checks it; *parallel* of them
        run at a time.

        Returns ``{"instance", "state", "directory", "downloaded": [paths], "kept": [paths],
        "bytes"}`` (bytes downloaded). A workflow still running has the outputs of its finished steps.
        """
        from concurrent.futures import ThreadPoolExecutor
        from pathlib import Path

        from .etag import same_content

        inst = self.instance(instance_id)
        iid = str(inst["id"])
        prefix = f"results/{iid}/"
        root = Path(dest if dest is not None else iid).resolve()
        answer: dict[str, Any] = {
            "instance": iid,
            "state": inst.get("state"),
            "directory": str(root),
            "downloaded": [],
            "kept": [],
            "bytes": 0,
        }
        try:
            bucket = self.home_bucket(create=False)
        except HeroesError as e:
            if e.status == 404:
                return answer  # no bucket: nothing was ever written back
            raise
        objects = [
            o
            for o in self.ls(prefix, bucket, recursive=True)["objects"]
            if not o.get("is_folder") and not str(o["key"]).endswith("/")
        ]
        todo: list[tuple[str, Path, int]] = []
        for o in sorted(objects, key=lambda o: str(o["key"])):
            key, size = str(o["key"]), int(o.get("size") or 0)
            target = (root / key[len(prefix) :]).resolve()
            if root not in target.parents:
                raise HeroesError(
                    f"output {key!r} would land outside {root}; nothing was downloaded", "invalid_key"
                )
            if same_content(target, size, str(o.get("etag") or "")):
                answer["kept"].append(str(target))
            else:
                todo.append((key, target, size))
        # every download runs to its end (what arrived is kept for the next run); then the first
        # failure, if any, is raised
        with ThreadPoolExecutor(max(1, parallel), thread_name_prefix="heroes-results") as pool:
            futures = [pool.submit(self.download, key, target, bucket) for key, target, _ in todo]
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:
            raise errors[0]
        answer["downloaded"] = [str(target) for _, target, _ in todo]
        answer["bytes"] = sum(size for _, _, size in todo)
        return answer

    def upload(
        self,
        key: str,
        source: bytes | str | os.PathLike[str],
        bucket: str | None = None,
        *,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """Store *source* (bytes, or a local file's path, streamed) as *key* in *bucket* (default:
        yours, created if missing); ``{"bucket", "key", "size", "etag", "sha256", "parts"}``."""
        import mimetypes

        bucket = bucket or self.home_bucket()
        params = {"bucket": bucket, "key": key}
        if isinstance(source, bytes):
            headers = {
                "Content-Type": content_type or "application/octet-stream",
                "Content-Length": str(len(source)),
            }
            return self.request(
                "POST", self.DATA_PREFIX + "/upload", params=params, data=source, headers=headers
            )
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise HeroesError(f"{path} is not a file; give the path of a local file to upload", "not_found")
        ctype = content_type or mimetypes.guess_type(path)[0] or "application/octet-stream"
        with open(path, "rb") as f:
            headers = {"Content-Type": ctype, "Content-Length": str(os.fstat(f.fileno()).st_size)}
            return self.request("POST", self.DATA_PREFIX + "/upload", params=params, data=f, headers=headers)

    def delete(self, keys: list[str] | str, bucket: str | None = None) -> dict[str, Any]:
        """Delete objects (a key or a list of at most 1000); ``{"deleted": [...], "errors": {...}}``."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        bucket = bucket or self.home_bucket(create=False)
        return self.request("DELETE", f"{self.DATA_PREFIX}/bucket/{_seg(bucket)}", json_body={"keys": keys})

    # --- decision, budgets (when the service has them) ------------------------------------------------
    DECIDE_PATH = "/organization/decision/decide"

    def decide(
        self,
        template: str,
        params: Mapping[str, Any] | None = None,
        *,
        strategy: str | None = None,
        **constraints: Any,
    ) -> pd.DataFrame:
        """Compare where *template* with *params* can run (time to result, cost, energy, carbon): one
        row per candidate, ranked. *constraints* (``deadline``, ``budget`` ...) go to the service as
        they are."""
        import pandas as pd

        self._require(self.DECIDE_PATH, "post", "decision")
        body: dict[str, Any] = {"template": template, "params": dict(params or {})}
        if strategy:
            body["strategy"] = strategy
        body.update({k: v for k, v in constraints.items() if v is not None})
        answer = self.request("POST", self.DECIDE_PATH, json_body=body)
        rows = answer.get("candidates", answer.get("rows")) if isinstance(answer, dict) else answer
        df = pd.DataFrame(rows or [])
        if isinstance(answer, dict):
            df.attrs.update({k: v for k, v in answer.items() if k not in ("candidates", "rows")})
        return df

    def budgets(self) -> list[dict[str, Any]]:
        """The organization's budgets (needs the ``billing`` scope): limit, spent, reserved,
        available per budget."""
        self._require("/organization/budgets", "get", "budget")
        return self.request("GET", "/organization/budgets")

    def usage(self, *, by: str = "period", period: str = "month", **filters: Any) -> list[dict[str, Any]]:
        """Your own usage and cost (``/organization/usage/me``), grouped *by* per *period*."""
        self._require("/organization/usage/me", "get", "usage")
        params = {"by": by, "period": period, **{k: v for k, v in filters.items() if v is not None}}
        return self.request("GET", "/organization/usage/me", params=params)


def human_size(n: int) -> str:
    """Bytes for people: 512 B, 40.1 kB, 3.2 MB (the widgets' and the ``heroes`` command's)."""
    if n < 1000:
        return f"{n} B"
    x, unit = n / 1000, "kB"
    for bigger in ("MB", "GB"):
        if x < 1000:
            break
        x, unit = x / 1000, bigger
    return f"{x:.1f} {unit}"


def key_name(key: str) -> str:
    """The last segment of an object key: the file name a download gets by default."""
    return key.rstrip("/").rsplit("/", 1)[-1]


def upload_key(local: str, key: str | None = None) -> str:
    """The key a local file is uploaded as: *key*, else the file's name; a *key* ending in ``/`` is a
    folder the file goes into under its own name."""
    name = os.path.basename(local)
    if key is None:
        return name
    return key + name if key.endswith("/") else key


def _seg(value: str) -> str:
    """*value* as one URL path segment (an id typed by a user cannot reach another path)."""
    return quote(str(value), safe="")
