"""``JobMonitor``: one workflow instance, live — each step's state and pending reason from the service's
event stream, the tail of a step's log, a cancel button, and the outputs once it is done.

A background thread reads :meth:`HeroesClient.events` for the instance and sets widget values; it
stops when the instance reaches a final state or when the monitor is closed. If the stream cannot be
followed (an old proxy, a network that drops long requests) the thread polls the instance instead, so
the monitor still reaches the end. Only core ipywidgets are used: it works in JupyterLab, Notebook
and Voila without any front-end build.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import ipywidgets as w

from ..client import FINAL_JOB_STATES, FINAL_STATES, HeroesClient, HeroesError
from ..client import human_size as _size
from .form import ERROR_STYLE, _esc

log = logging.getLogger("jupyter_heroes.widgets")

#: badge colours per state (anything else: grey)
STATE_COLOURS = {
    "completed": "#2e7d32",
    "running": "#1565c0",
    "completing": "#1565c0",
    "queued": "#6d4c41",
    "held": "#ef6c00",
    "submitting": "#6d4c41",
    "new": "#757575",
    "failing": "#c62828",
    "failed": "#c62828",
    "timeout": "#c62828",
    "node_fail": "#c62828",
    "out_of_memory": "#c62828",
    "cancelled": "#616161",
}
LOG_STYLE = (
    "max-height:16em;overflow:auto;background:#f7f7f7;border:1px solid #ddd;padding:4px;"
    "font-size:85%;white-space:pre-wrap;margin:0"
)


def badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#757575")
    return (
        f"<span class='heroes-state heroes-state-{_esc(state)}' data-state='{_esc(state)}' "
        f"style='background:{colour};color:white;border-radius:3px;padding:1px 6px;font-size:90%'>"
        f"{_esc(state)}</span>"
    )


class JobMonitor(w.VBox):
    """A live view of one workflow instance (*instance*: its id or the dict the service returned).

    ``state``: the instance's current state; ``jobs``: step -> the step's latest fields;
    ``outputs``: the object keys the steps wrote back; ``events``: every event applied (for
    inspection); :meth:`wait` blocks until the end; :meth:`close` stops following and closes it.
    """

    def __init__(
        self,
        client: HeroesClient,
        instance: str | Mapping[str, Any],
        *,
        follow: bool = True,
        poll_interval: float = 2.0,
        **kwargs: Any,
    ) -> None:
        self.client = client
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._closing = threading.Event()
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self.events: list[dict[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.outputs: list[str] = []
        self.data: dict[str, Any] = {}
        self.state = ""
        self.instance_id: str = instance if isinstance(instance, str) else str(instance["id"])

        self.title = w.HTML()
        self.steps_box = w.VBox()
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="danger")
        self.cancel_button.add_class("heroes-cancel")
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.log_step = w.Dropdown(description="log of", layout=w.Layout(width="220px"))
        self.log_stream = w.ToggleButtons(options=[("stdout", "out"), ("stderr", "err")], value="out")
        self.log_stream.style.button_width = "70px"
        self.log_button = w.Button(description="Show log", icon="file-text-o")
        self.log_button.on_click(lambda _b: self.show_log())
        self.log_view = w.HTML()
        self.log_view.add_class("heroes-log")
        self.staging: dict[tuple[str, str], dict[str, Any]] = {}
        self.staging_view = w.HTML()
        self.staging_view.add_class("heroes-staging")
        self.outputs_view = w.HTML()
        self.outputs_view.add_class("heroes-outputs")
        self.message = w.HTML()
        self.message.add_class("heroes-monitor-message")
        super().__init__(
            [
                self.title,
                self.steps_box,
                w.HBox([self.cancel_button, self.refresh_button]),
                w.HBox([self.log_step, self.log_stream, self.log_button]),
                self.log_view,
                self.staging_view,
                self.outputs_view,
                self.message,
            ],
            **kwargs,
        )
        self.add_class("heroes-monitor")

        if isinstance(instance, str):
            try:
                instance = client.instance(instance)
            except HeroesError as e:
                self._error(e.message)
                return
        self._set_instance(instance)
        if follow and not self._done.is_set():
            self.start()

    # --- following --------------------------------------------------------------------------------
    def start(self) -> None:
        """Follow the instance in a background thread (done by the constructor unless follow=False)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(
            target=self._follow, name=f"heroes-monitor-{self.instance_id[:8]}", daemon=True
        )
        self._thread.start()

    def _follow(self) -> None:
        try:
            self._stream = self.client.events(self.instance_id, timeout=600)
            for ev in self._stream:
                if self._closing.is_set():
                    return
                self.apply_event(ev)
                if self._done.is_set():
                    return
        except HeroesError as e:
            if self._closing.is_set():
                return
            log.info("event stream of %s failed (%s); polling instead", self.instance_id, e.reason)
        except Exception:  # never let a widget thread die silently
            log.exception("following workflow %s failed; polling instead", self.instance_id)
        finally:
            if self._stream is not None:
                self._stream.close()
        while not self._closing.is_set() and not self._done.is_set():
            try:
                self.refresh()
            except Exception:
                log.exception("polling workflow %s failed", self.instance_id)
            self._closing.wait(self.poll_interval)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the instance is final (True) or *timeout* seconds pass (False)."""
        if self._thread is None and not self._done.is_set():
            self.start()
        return self._done.wait(timeout)

    def close(self) -> None:
        """Stop following and close the widgets."""
        self._closing.set()
        if self._stream is not None:
            self._stream.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        super().close()

    @property
    def following(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- applying what the service says -------------------------------------------------------------
    def apply_event(self, ev: Mapping[str, Any]) -> None:
        """Update the view from one event of the service's stream."""
        if ev.get("instance") != self.instance_id:
            return
        with self._lock:
            self.events.append(dict(ev))
            kind = ev.get("type")
            if kind == "snapshot" and isinstance(ev.get("data"), Mapping):
                self._set_instance(ev["data"])
                return
            if kind == "job" and ev.get("step"):
                job = self.jobs.setdefault(str(ev["step"]), {"step": ev["step"]})
                for key in ("state", "reason", "job_id", "exit_code"):
                    if key in ev:
                        job[key] = ev[key]
                self._render_steps()
                if job.get("state") in FINAL_JOB_STATES and self.log_step.value == job["step"]:
                    self._tail_quietly()
            elif kind == "staging" and ev.get("file"):
                self.staging[(str(ev.get("direction", "")), str(ev["file"]))] = dict(ev)
                self._render_staging()
            elif kind == "instance" and ev.get("state"):
                if str(ev["state"]) in FINAL_STATES:
                    self.state = str(ev["state"])
                    self._finish()  # shows the final state together with exit codes and outputs
                else:
                    self.state = str(ev["state"])
                    self._render_title()

    def refresh(self) -> dict[str, Any]:
        """Fetch the instance again and show it."""
        try:
            inst = self.client.instance(self.instance_id)
        except HeroesError as e:
            self._error(e.message)
            raise
        self._set_instance(inst)
        return inst

    def _set_instance(self, inst: Mapping[str, Any]) -> None:
        with self._lock:
            self.data = dict(inst)
            self.state = str(inst.get("state", ""))
            self.jobs = {str(j["step"]): dict(j) for j in inst.get("jobs", [])}
            steps = list(self.jobs)
            if list(self.log_step.options) != steps:
                self.log_step.options = steps
                if steps:
                    self.log_step.value = steps[-1] if self.state in FINAL_STATES else steps[0]
            self.outputs = [
                o for j in self.jobs.values() for o in (j.get("accounting") or {}).get("outputs", [])
            ]
            self._render_steps()
            self._render_outputs()
            self._render_title()
            if self.state in FINAL_STATES and not self._done.is_set():
                self._finish(fetch=False)

    def _finish(self, fetch: bool = True) -> None:
        """The instance is final: show its last details (exit codes, outputs) and the log's end."""
        if fetch:
            try:
                inst = self.client.instance(self.instance_id)
            except HeroesError as e:
                self._error(e.message)
            else:
                self.data = dict(inst)
                self.jobs = {str(j["step"]): dict(j) for j in inst.get("jobs", [])}
                self.outputs = [
                    o for j in self.jobs.values() for o in (j.get("accounting") or {}).get("outputs", [])
                ]
                self.state = str(inst.get("state", self.state))
                # details first: once the title says 'completed', the outputs are already listed
                self._render_steps()
                self._render_outputs()
            self._render_title()
        self.cancel_button.disabled = True
        self._tail_quietly()
        self._done.set()

    # --- actions ----------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Cancel the instance (every live step)."""
        try:
            inst = self.client.cancel(self.instance_id)
        except HeroesError as e:
            self._error(e.message)
            return
        self.message.value = "<span style='color:#555'>cancel requested</span>"
        self._set_instance(inst)

    def show_log(self) -> str:
        """Show (and return) the end of the selected step's stdout or stderr."""
        step = self.log_step.value
        try:
            answer = self.client.logs(self.instance_id, step or None, stream=self.log_stream.value)
        except HeroesError as e:
            self._error(e.message)
            return ""
        text = answer.get("text", "")
        self.log_view.value = (
            f"<pre style='{LOG_STYLE}'>{_esc(text) or '<i>(empty)</i>'}</pre>"
            f"<div style='color:#666;font-size:85%'>end of {_esc(answer.get('step', ''))} "
            f"std{_esc(answer.get('stream', 'out'))}</div>"
        )
        return text

    def _tail_quietly(self) -> None:
        try:
            if self.log_step.options:
                self.show_log()
        except Exception:  # a log that cannot be read must not stop the monitor
            log.exception("reading the log of %s failed", self.instance_id)

    # --- rendering --------------------------------------------------------------------------------
    def _render_title(self) -> None:
        d = self.data
        where = d.get("cluster", "")
        tpl = f"{d.get('template', '')} v{d.get('template_version', '')}" if d.get("template") else ""
        self.title.value = (
            f"<div class='heroes-monitor-title' data-state='{_esc(self.state)}'><b>{_esc(tpl)}</b>"
            f"{' on ' + _esc(where) if where else ''} &nbsp;{badge(self.state)}"
            f"<br><span style='color:#666;font-size:85%'>workflow {_esc(self.instance_id)}</span></div>"
        )
        self.cancel_button.disabled = self.state in FINAL_STATES

    def _render_steps(self) -> None:
        rows = []
        for step, job in self.jobs.items():
            state = str(job.get("state", ""))
            detail = []
            if job.get("reason"):
                detail.append(str(job["reason"]))
            if job.get("job_id"):
                detail.append(f"job {job['job_id']}")
            if job.get("exit_code") is not None:
                detail.append(f"exit code {job['exit_code']}")
            rows.append(
                f"<tr class='heroes-step' data-step='{_esc(step)}' data-state='{_esc(state)}'>"
                f"<td style='padding-right:10px'>{_esc(step)}</td><td style='padding-right:10px'>"
                f"{badge(state)}</td><td style='color:#555'>{_esc('; '.join(detail))}</td></tr>"
            )
        html = f"<table class='heroes-steps'>{''.join(rows)}</table>"
        if not self.steps_box.children:
            self.steps_box.children = (w.HTML(html),)
        else:
            self.steps_box.children[0].value = html

    def _render_staging(self) -> None:
        rows = []
        for (direction, name), ev in self.staging.items():
            what = "input" if direction == "in" else "output"
            done, total = int(ev.get("bytes_done") or 0), int(ev.get("bytes_total") or 0)
            amount = f" {_size(done)} of {_size(total)}" if total else ""
            note = f": {ev['message']}" if ev.get("message") else ""
            rows.append(
                f"<li data-state='{_esc(str(ev.get('state', '')))}'>{what} <code>{_esc(name)}</code> "
                f"{_esc(str(ev.get('state', '')))}{_esc(amount)}{_esc(note)}</li>"
            )
        self.staging_view.value = f"<b>Files</b><ul style='margin:2px 0'>{''.join(rows)}</ul>" if rows else ""

    #: the base URL of the Jupyter server this kernel belongs to (``/user/NAME/`` under JupyterHub),
    #: whose HEROES server extension serves downloads to the logged-in browser; None: no links
    server_base_url: str | None = os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or None
    _bucket: str | None = None

    def download_url(self, key: str) -> str | None:
        """A link that downloads *key* from your bucket through this Jupyter server's HEROES server
        extension (the browser's own login; no token in the page), or None when the server's base
        URL is unknown or the organization has no object store."""
        base = self.server_base_url
        if not base:
            return None
        if self._bucket is None:
            try:
                self._bucket = self.client.home_bucket(create=False)
            except HeroesError as e:
                log.info("no download links: %s", e.reason)
                self._bucket = ""
        if not self._bucket:
            return None
        query = {"bucket": self._bucket, "key": key}
        if self.client.organization:
            query["organization"] = self.client.organization
        return f"{base.rstrip('/')}/heroes/api/v1/organization/data/download?{urlencode(query)}"

    def _render_outputs(self) -> None:
        if not self.outputs:
            self.outputs_view.value = ""
            return
        items = ""
        for o in self.outputs:
            url = self.download_url(o)
            if url is None:
                items += f"<li><code>{_esc(o)}</code></li>"
            else:
                items += (
                    f"<li><a class='heroes-download' href='{_esc(url)}' download target='_blank' "
                    f"title='download'><code>{_esc(o)}</code></a></li>"
                )
        self.outputs_view.value = f"<b>Outputs</b> (in your storage)<ul style='margin:2px 0'>{items}</ul>"

    def _error(self, message: str) -> None:
        self.message.value = f"<span style='{ERROR_STYLE}'>{_esc(message)}</span>"
