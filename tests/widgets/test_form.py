"""The parameter form generated from template declarations, and its inline validation (no service)."""

from __future__ import annotations

import ipywidgets as w
import pytest

from jupyter_heroes.widgets import ParameterForm, check_value

#: the declarations of the shipped templates, and the other kinds a template may use
DECLS = {
    "samples": {
        "type": "integer",
        "default": 1000000,
        "min": 1000,
        "max": 2000000000,
        "description": "Number of random points",
    },
    "alpha": {"type": "number", "default": 0.25, "min": 0.0001, "max": 0.5},
    "profile": {"type": "string", "enum": ["spike", "step", "sine"], "default": "spike"},
    "label": {"type": "string", "default": "run", "max_length": 10},
    "code": {"type": "string", "pattern": "[A-Z]{3}"},
    "partition": {
        "type": "string",
        "default": "debug",
        "locked": True,
        "description": "Queue chosen by your admin",
    },
    "verbose": {"type": "boolean", "default": True},
    "initial": {"type": "file", "required": False},
    "mesh": {"type": "file"},
}


@pytest.fixture
def form():
    return ParameterForm({"name": "t", "parameters": DECLS})


def test_one_widget_per_declaration(form):
    kinds = {name: type(f.input) for name, f in form.fields.items()}
    assert kinds == {
        "samples": w.IntText,
        "alpha": w.FloatText,
        "profile": w.Dropdown,
        "label": w.Text,
        "code": w.Text,
        "partition": w.Text,
        "verbose": w.Checkbox,
        "initial": w.Text,
        "mesh": w.Text,
    }
    f = form.fields
    assert f["samples"].value == 1000000 and f["alpha"].value == 0.25 and f["verbose"].value is True
    assert list(f["profile"].input.options) == ["spike", "step", "sine"] and f["profile"].value == "spike"
    assert f["partition"].input.disabled and f["partition"].value == "debug"
    assert not f["samples"].input.disabled
    assert (
        "1000 to 2000000000" in f["samples"].hint.value
        and "Number of random points" in f["samples"].hint.value
    )
    assert "locked by your organization's admin" in f["partition"].hint.value
    assert f["samples"].input.description == "samples"
    assert "heroes-param-samples" in f["samples"].input._dom_classes
    assert form.box.children == tuple(x.box for x in f.values())


def test_required_values_missing_make_the_form_invalid(form):
    assert form.problems == {"code": "required", "mesh": "required"}
    assert not form.valid
    form.set(code="ABC", mesh="inputs/mesh.dat")
    assert form.valid and form.problems == {}
    assert form.values() == {
        "samples": 1000000,
        "alpha": 0.25,
        "profile": "spike",
        "label": "run",
        "code": "ABC",
        "verbose": True,
        "mesh": "inputs/mesh.dat",
    }  # locked 'partition' and empty optional 'initial' are left to the service's defaults


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("samples", 5, "must be at least 1000"),
        ("samples", 3_000_000_000, "must be at most 2000000000"),
        ("alpha", 0.6, "must be at most 0.5"),
        ("alpha", 0.0, "must be at least 0.0001"),
        ("label", "x" * 11, "at most 10 characters (11 now)"),
        ("code", "abc", "must match [A-Z]{3}"),
        ("mesh", "/etc/passwd", "a path in your storage, not an absolute path"),
        ("mesh", "a/../../b", "no '.' or '..' in the path"),
        ("initial", "a\\b", "no control characters or backslashes"),
    ],
)
def test_a_bad_value_is_shown_next_to_its_field(form, name, value, problem):
    form.set(code="ABC", mesh="m")
    assert form.valid
    field = form.fields[name]
    field.value = value
    assert form.problems == {name: problem}
    assert problem in field.error.value and "color:#c62828" in field.error.value
    assert "heroes-invalid" in field.input._dom_classes
    assert not form.valid
    # fixing it clears the message
    field.value = DECLS[name].get("default", "ABC" if name == "code" else "ok")
    assert form.valid and field.error.value == "" and "heroes-invalid" not in field.input._dom_classes


def test_changes_notify_the_owner():
    seen = []
    form = ParameterForm(
        {"parameters": {"n": {"type": "integer", "default": 2, "min": 1}}},
        on_change=lambda: seen.append(form.valid),
    )
    form.fields["n"].value = 0
    form.fields["n"].value = 3
    assert seen == [False, True]


def test_a_template_without_parameters():
    form = ParameterForm({"parameters": {}})
    assert form.valid and form.values() == {}
    assert "no parameters" in form.box.children[0].value


@pytest.mark.parametrize(
    ("decl", "value", "problem"),
    [
        ({"type": "integer"}, 1.5, "expected an integer"),
        ({"type": "integer"}, True, "expected an integer"),
        ({"type": "integer", "enum": [1, 2]}, 3, "must be one of 1, 2"),
        ({"type": "number"}, float("inf"), "expected a finite number"),
        ({"type": "number"}, "1", "expected a number"),
        ({"type": "boolean"}, 1, "expected true or false"),
        ({"type": "string"}, 1, "expected text"),
        ({"type": "string"}, "a\x00b", "contains a NUL character"),
        ({"type": "string", "max_length": 3}, "abc", ""),
        ({"type": "integer", "min": 1, "max": 3}, 2, ""),
    ],
)
def test_check_value(decl, value, problem):
    assert check_value(decl, value) == problem
