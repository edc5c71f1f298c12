"""The template examples in the user documentation are valid templates (docs that run)."""

import re
from pathlib import Path

from jupyter_heroes.workflows.templates import ParameterError, load_template

DOC = Path(__file__).parents[2] / "docs" / "user" / "templates.md"


def test_yaml_examples_in_the_docs_load():
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/user/templates.md lost its examples"
    for block in blocks:
        t = load_template(block)
        assert t.resolve({}) is not None


def test_the_documented_error_message_is_the_real_one():
    block = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)[0]
    t = load_template(block)
    try:
        t.resolve({"count": 500})
    except ParameterError as e:
        assert f"`{e}`" in DOC.read_text()
    else:
        raise AssertionError("count=500 should be refused")
