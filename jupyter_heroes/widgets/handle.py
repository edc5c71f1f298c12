"""``InstanceHandle``: what ``%heroes submit`` and ``%heroes status ID`` return — a workflow instance
you can ask about (:attr:`state`, :meth:`refresh`, :meth:`wait`, :meth:`logs`, :meth:`cancel`,
:attr:`outputs`) and that shows itself as a live :class:`~.monitor.JobMonitor` in a notebook (as
plain text elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..client import FINAL_STATES, HeroesClient, HeroesError


class InstanceHandle:
    """A submitted workflow. ``data`` is the service's last view of it (a dict)."""

    def __init__(self, client: HeroesClient, data: dict[str, Any]) -> None:
        self.client = client
        self.data = dict(data)
        self.id: str = str(data["id"])
        self._monitor: Any = None

    # --- what the service says --------------------------------------------------------------------
    def refresh(self) -> InstanceHandle:
        """Fetch the instance again; returns self."""
        self.data = self.client.instance(self.id)
        return self

    @property
    def state(self) -> str:
        """The current state (asks the service unless already final)."""
        if self.data.get("state") not in FINAL_STATES:
            self.refresh()
        return str(self.data["state"])

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def jobs(self) -> list[dict[str, Any]]:
        return list(self.data.get("jobs", []))

    @property
    def outputs(self) -> list[str]:
        """Object keys the steps wrote back to your storage (known once they finished)."""
        return [o for j in self.jobs for o in (j.get("accounting") or {}).get("outputs", [])]

    def download_outputs(self, dest: str | os.PathLike[str] = ".") -> list[Path]:
        """Copy every output from your storage into the directory *dest* (keeping the paths under
        ``results/<id>/``; files already there with the same content are kept); the local paths."""
        answer = self.client.download_results(self.id, dest)
        return sorted(Path(p) for p in answer["downloaded"] + answer["kept"])

    def wait(self, timeout: float = 3600.0) -> InstanceHandle:
        """Block until the workflow is completed, failed or cancelled; returns self."""
        self.data = self.client.wait(self.id, timeout)
        return self

    def logs(self, step: str | None = None, *, err: bool = False) -> str:
        """The end of a step's stdout (or stderr with *err*)."""
        return str(self.client.logs(self.id, step, stream="err" if err else "out").get("text", ""))

    def cancel(self) -> InstanceHandle:
        """Cancel every live step; returns self."""
        self.data = self.client.cancel(self.id)
        return self

    # --- display ----------------------------------------------------------------------------------
    def monitor(self) -> Any:
        """The live widget of this instance (created once, following the event stream)."""
        if self._monitor is None:
            from .monitor import JobMonitor

            self._monitor = JobMonitor(self.client, self.data)
        return self._monitor

    def _ipython_display_(self) -> None:
        from IPython.display import display

        try:
            display(self.monitor())
        except HeroesError as e:  # pragma: no cover - the monitor shows its own errors
            print(f"{self!r}: {e.message}")

    def __repr__(self) -> str:
        d = self.data
        steps = ", ".join(f"{j.get('step')}={j.get('state')}" for j in d.get("jobs", []))
        return (
            f"<HEROES workflow {self.id} {d.get('template', '')} v{d.get('template_version', '')} "
            f"on {d.get('cluster', '')}: {d.get('state', '')}{' (' + steps + ')' if steps else ''}>"
        )
