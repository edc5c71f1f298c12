"""Saved runtime predictors: one file per organization in ``c.OrgPredictors.state_dir``.

A file is a line ``HEROES-PREDICTOR``, a line of JSON with the :func:`versions` it was written with,
then a zlib-compressed pickle of what an organization's predictor learnt (the
:class:`~.predict.RuntimePredictor`, its :class:`~.advice.WalltimeAdvisor`, the recent memory peaks)
and the cursor of the last finished job it read. Restoring one lets a restarted service read only the
jobs finished since the save instead of the organization's whole history.

Pickles run code when loaded, so a file is only read from a directory and a file that the service's
own user owns and nobody else can write, and only once its JSON line shows the same versions of
HEROES, scikit-learn, numpy and Python (a pickle of other versions' objects is never loaded). It is
written to a temporary file (mode 0600) and renamed into place, so a crash mid-write never leaves half
a file.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

#: bump when the saved layout changes
FORMAT = 1
SUFFIX = ".predictor"
MAGIC = b"HEROES-PREDICTOR\n"


class SavedStateError(Exception):
    """A saved predictor that cannot be used; the message says why and what to do."""


def versions() -> dict[str, str]:
    """What a saved predictor must have been written with to be loaded."""
    import numpy
    import sklearn

    from .. import __version__

    return {
        "format": str(FORMAT),
        "heroes": __version__,
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
    }


def path_for(state_dir: str | os.PathLike[str], org_id: int) -> Path:
    return Path(state_dir) / f"{int(org_id)}{SUFFIX}"


def _check_owned(path: Path, what: str) -> None:
    st = path.stat()
    if st.st_uid != os.getuid():
        raise SavedStateError(
            f"{what} {path} is owned by uid {st.st_uid}, not by the service's user ({os.getuid()}): "
            "not loaded. Give it to the service's user or delete it"
        )
    if st.st_mode & 0o022:
        raise SavedStateError(
            f"{what} {path} can be written by other users (mode {st.st_mode & 0o777:o}): not loaded. "
            f"Fix it with chmod go-w {path}, or delete it"
        )


def prepare_dir(state_dir: str | os.PathLike[str]) -> Path:
    """The directory, created with mode 0700 if missing; raises :class:`SavedStateError` if another
    user owns it or can write to it."""
    d = Path(state_dir)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_owned(d, "the predictors' directory")
    return d


def write(state_dir: str | os.PathLike[str], org_id: int, state: dict[str, Any]) -> int:
    """Save *state* for *org_id* (atomically, mode 0600); returns the file's size in bytes."""
    d = prepare_dir(state_dir)
    head = MAGIC + json.dumps(versions(), sort_keys=True).encode() + b"\n"
    blob = head + zlib.compress(pickle.dumps(state, protocol=5), 1)
    final = path_for(d, org_id)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=d)  # mode 0600
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(blob)


def read(state_dir: str | os.PathLike[str], org_id: int) -> dict[str, Any] | None:
    """The state saved for *org_id*, ``None`` if there is none; raises :class:`SavedStateError` when
    there is one that must not or cannot be used (the message says why)."""
    d = Path(state_dir)
    path = path_for(d, org_id)
    if not path.is_file():
        return None
    _check_owned(d, "the predictors' directory")
    _check_owned(path, "the saved predictor")
    data = path.read_bytes()
    head, _, body = data[len(MAGIC) :].partition(b"\n")
    try:
        if not data.startswith(MAGIC):
            raise ValueError("no HEROES-PREDICTOR header")
        written = json.loads(head)
    except ValueError as e:
        raise SavedStateError(f"the saved predictor {path} is not a HEROES predictor ({e})") from None
    want = versions()
    if written != want:
        diff = ", ".join(
            f"{k} {written.get(k, '?')} (now {v})" for k, v in want.items() if written.get(k) != v
        )
        raise SavedStateError(f"the saved predictor {path} was written by {diff}")
    try:
        state = pickle.loads(zlib.decompress(body))
    except Exception as e:  # any damage to the file means: rebuild
        raise SavedStateError(
            f"the saved predictor {path} cannot be read ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(state, dict):
        raise SavedStateError(f"the saved predictor {path} is not a HEROES predictor")
    return state
