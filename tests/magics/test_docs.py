"""docs/user/notebooks.md says what the code does: every %heroes subcommand is documented, and the
messages in its trouble-shooting table are the ones the client and magics really produce."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from jupyter_heroes import cli_data, cli_usage, cli_workflows, client, magics
from jupyter_heroes.magics import HeroesMagics

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "user" / "notebooks.md").read_text()


def test_every_subcommand_is_documented():
    for sub in HeroesMagics.SUBCOMMANDS:
        assert f"`%heroes {sub}" in DOC, sub


def test_every_heroes_command_for_users_is_documented():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    for add in cli_workflows.COMMANDS + cli_data.COMMANDS + cli_usage.COMMANDS:
        add(sub)
    names = sorted(sub.choices)
    assert {"submit", "results", "data"} <= set(names)
    for name in names:
        assert re.search(rf"^heroes {name}\b", DOC, re.M), name


def test_the_trouble_shooting_messages_are_real():
    table = DOC.split("## When something goes wrong", 1)[1]
    quoted = re.findall(r"^\| `([^`]+)`", table, re.M)
    assert len(quoted) >= 6
    # the client's and magics' own messages, and the service's they pass on
    files = [Path(m.__file__) for m in (client, magics, cli_workflows)]
    files += sorted((ROOT / "jupyter_heroes" / "service").rglob("*.py"))
    sources = "".join(f.read_text() for f in files)
    sources = re.sub(r'"\s*\n\s*f?"', "", sources)  # join implicitly concatenated string literals
    for message in quoted:
        for part in (p.strip() for p in message.split("...") if p.strip()):
            part = part.split("(")[0].strip()
            # X stands for a name the message fills in ({self.org.name} in the code)
            pattern = r"\S+".join(re.escape(p) for p in re.split(r"\bX\b", part))
            assert re.search(pattern, sources, re.I), message


def test_the_walkthrough_is_shipped_without_outputs():
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "walkthrough.ipynb", as_version=4)
    nbformat.validate(nb)
    assert all(
        not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"
    )
