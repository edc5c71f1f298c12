"""The workflow template format: validation of documents and of submitted parameters."""

from __future__ import annotations

import copy
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from jupyter_heroes.workflows.templates import ParameterError, TemplateError, load_template

TEMPLATES = sorted((Path(__file__).parents[2] / "templates").glob("*.yaml"))
HOSTILE = [
    "$(touch /tmp/pwned)",
    "`id`",
    "a; rm -rf /",
    'it\'s "quoted"',
    "line1\nline2",
    "../../etc/passwd",
    "${HOME}",
    "{{ seed }}",
    "*",
    "-rf",
]


def minimal(**over):
    doc = {
        "heroes_template": 1,
        "name": "t",
        "version": 1,
        "parameters": {
            "msg": {"type": "string", "default": "hi"},
            "n": {"type": "integer", "default": 2, "min": 1, "max": 5},
        },
        "steps": [{"name": "a", "command": ["echo", "{{ msg }}", "n={{ n }}"]}],
    }
    doc.update(over)
    return doc


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_shipped_templates_load_and_resolve_defaults(path):
    t = load_template(path.read_text())
    # a required parameter without a default (run-python's script) is refused when missing
    required = {p.name: "x" for p in t.parameters.values() if p.required and p.default is None}
    if required:
        with pytest.raises(ParameterError, match="is required"):
            t.resolve({})
    values = t.resolve(required)
    for step in t.order():
        argv = t.render_argv(step, values)
        assert argv[0] == "python3"
        assert "{{" not in " ".join(argv[3:])
    assert t.application.startswith("heroes-")


def test_three_shipped_shapes():
    by = {p.stem: load_template(p.read_text()) for p in TEMPLATES}
    assert len(by["monte-carlo-pi"].steps) == 1
    sweep = by["parameter-sweep"]
    assert sweep.array_size(sweep.steps[0], sweep.resolve({"points": 5})) == 5
    pipe = by["heat-pipeline"]
    assert [s.name for s in pipe.order()] == ["preprocess", "simulate", "postprocess"]
    assert pipe.step("postprocess").depends_on == ("simulate",)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_stay_one_literal_argument(value, tmp_path):
    t = load_template(minimal())
    argv = t.render_argv(t.steps[0], t.resolve({"msg": value}))
    assert argv[1] == value  # substituted once, never re-interpreted (not even a nested {{ }})
    # quoted and run through a real shell, the value comes back byte for byte and nothing executes
    script = tmp_path / "s.sh"
    script.write_text("printf '%s' " + shlex.join(argv[1:2]) + "\n")
    out = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out == value
    assert not Path("/tmp/pwned").exists()


def test_parameter_type_range_enum_and_unknown():
    doc = minimal(
        parameters={
            "n": {"type": "integer", "min": 1, "max": 5},
            "x": {"type": "number", "default": 0.5},
            "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
            "flag": {"type": "boolean", "default": False},
        },
        steps=[{"name": "a", "command": ["run", "{{ n }}", "{{ x }}", "{{ mode }}", "{{ flag }}"]}],
    )
    t = load_template(doc)
    assert t.resolve({"n": "3"})["n"] == 3
    with pytest.raises(ParameterError, match="'n': 9 is above the maximum 5"):
        t.resolve({"n": 9})
    with pytest.raises(ParameterError, match="'n': expected an integer"):
        t.resolve({"n": "3; ls"})
    with pytest.raises(ParameterError, match="'n': is required"):
        t.resolve({})
    with pytest.raises(ParameterError, match="'mode': 'c' is not one of"):
        t.resolve({"n": 1, "mode": "c"})
    with pytest.raises(ParameterError, match="'flag': expected true or false"):
        t.resolve({"n": 1, "flag": "yes"})
    with pytest.raises(ParameterError, match="'x': expected a finite number"):
        t.resolve({"n": 1, "x": float("nan")})
    with pytest.raises(ParameterError, match="'bogus': unknown parameter"):
        t.resolve({"n": 1, "bogus": 1})
    assert t.environment(t.resolve({"n": 2, "flag": True})) == {
        "HEROES_PARAM_N": "2",
        "HEROES_PARAM_X": "0.5",
        "HEROES_PARAM_MODE": "a",
        "HEROES_PARAM_FLAG": "true",
    }


def test_locked_parameter_only_changed_by_admin():
    t = load_template(
        minimal(
            parameters={"q": {"type": "string", "default": "debug", "locked": True}},
            steps=[{"name": "a", "command": ["x", "{{ q }}"]}],
        )
    )
    assert t.resolve({"q": "debug"})["q"] == "debug"
    with pytest.raises(ParameterError, match="locked by your organization's admin"):
        t.resolve({"q": "long"})
    assert t.resolve({"q": "long"}, admin=True)["q"] == "long"


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../b", "a/./b", "a\x00b", "a\nb", "a\\b", ""])
def test_file_parameters_cannot_escape(bad):
    t = load_template(
        minimal(parameters={"f": {"type": "file"}}, steps=[{"name": "a", "command": ["cat", "{{ f }}"]}])
    )
    with pytest.raises(ParameterError, match="'f'"):
        t.resolve({"f": bad})
    assert t.resolve({"f": "inputs/data.csv"})["f"] == "inputs/data.csv"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"heroes_template": 2}, "reads format 1"),
        ({"name": "Bad Name"}, "name:"),
        ({"surprise": 1}, r"unknown top-level field\(s\) \['surprise'\]"),
        ({"steps": []}, "steps: expected a non-empty list"),
        ({"steps": [{"name": "a", "command": "echo {{ msg }}"}]}, "not a shell string"),
        (
            {"steps": [{"name": "a", "command": ["echo", "{{ nope }}"]}]},
            r"\{\{ nope \}\} names no declared parameter",
        ),
        (
            {"steps": [{"name": "a", "command": ["x"], "resources": {"cpus": 2}}]},
            r"unknown field\(s\) \['cpus'\]",
        ),
        ({"steps": [{"name": "a", "command": ["x"], "resources": {"walltime": "1:99:00"}}]}, "above 59"),
        (
            {"steps": [{"name": "a", "command": ["x"], "resources": {"nodes": 0}}]},
            "nodes: expected an integer between 1",
        ),
        (
            {
                "steps": [
                    {"name": "a", "command": ["x"], "depends_on": ["b"]},
                    {"name": "b", "command": ["y"], "depends_on": ["a"]},
                ]
            },
            "dependency cycle",
        ),
        ({"steps": [{"name": "a", "command": ["x"], "depends_on": ["zz"]}]}, "no step named 'zz'"),
        ({"steps": [{"name": "a", "command": ["x"]}, {"name": "a", "command": ["y"]}]}, "duplicate step"),
        ({"steps": [{"name": "a", "command": ["x"], "outputs": ["../out"]}]}, r"'\.' or '\.\.'"),
        (
            {"steps": [{"name": "a", "command": ["x"], "array": "{{ msg }}"}]},
            "must name an integer parameter",
        ),
        ({"parameters": {"n": {"type": "integer", "min": 5, "max": 1}}}, "min 5 is above max 1"),
        (
            {"parameters": {"n": {"type": "integer", "default": 9, "max": 1}}},
            r"default: parameter 'n': 9 is above",
        ),
        ({"parameters": {"n": {"type": "string", "locked": True}}}, "locked parameter needs a default"),
        ({"parameters": {"n": {"type": "list"}}}, "type: must be one of"),
    ],
)
def test_invalid_documents_name_the_field(change, message):
    doc = copy.deepcopy(minimal())
    doc.update(change)
    if "parameters" in change:
        doc["steps"] = [{"name": "a", "command": ["x"]}]
    with pytest.raises(TemplateError, match=message):
        load_template(doc)


def test_yaml_text_errors_are_template_errors():
    with pytest.raises(TemplateError, match="not valid YAML"):
        load_template("name: [unclosed")
    with pytest.raises(TemplateError, match="a template is a mapping"):
        load_template("- just a list")
    assert load_template(yaml.safe_dump(minimal())).name == "t"
