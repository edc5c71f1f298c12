"""The Python examples of docs/vendor/offers.md and docs/admin/billing.md run (docs that run), and the
refusal message quoted in the billing page is the real one."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from jupyter_heroes.marketplace import offers

DOCS = Path(__file__).parents[2] / "docs"


def _blocks(path: Path) -> list[str]:
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", path.read_text(), re.S | re.M)
    assert blocks, f"{path} lost its examples"
    return [re.sub(rf"(?m)^{indent}", "", code) for indent, code in blocks]


def _run(path: Path, namespace: dict) -> dict:
    for i, code in enumerate(_blocks(path)):
        exec(compile(code, f"{path.name} example {i + 1}", "exec"), namespace)
    return namespace


def test_vendor_examples_run(db):
    with db.session() as session:
        ns = _run(DOCS / "vendor" / "offers.md", {"session": session, "ids": db.ids})
    assert ns["v2"].version == 2 and ns["app"].image.endswith("cfd-solver:2.1")


def test_billing_examples_run_and_quote_the_real_message(db):
    with db.session() as session:
        offer_id = offers.publish_offer(
            session,
            db.ids.orgs["hpc-centre"],
            name="galileo-debug",
            cluster_id=db.ids.clusters["galileo"],
            queue="debug",
            price={"currency": "EUR", "core_hour": "0.012"},
            visibility="public",
            now=datetime(2024, 1, 1),
        ).offer_id
        ns = _run(DOCS / "admin" / "billing.md", {"session": session, "ids": db.ids, "offer_id": offer_id})
    text = (DOCS / "admin" / "billing.md").read_text()
    quoted = re.search(r"The full message reads: `(.*?)`", text, re.S).group(1)
    assert " ".join(quoted.split()) == ns["message"]
