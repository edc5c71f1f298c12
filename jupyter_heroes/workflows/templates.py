"""Workflow templates: a versioned YAML format with typed parameters and steps.

A template looks like this (see ``templates/`` for the shipped ones)::

    heroes_template: 1                 # format version
    name: single-step
    version: 1
    application: heroes-hello          # the application id the decision module learns from
    description: One job.
    parameters:
      message: {type: string, default: hello, max_length: 200}
      n: {type: integer, default: 10, min: 1, max: 1000}
      mode: {type: string, enum: [fast, accurate], default: fast}
      partition: {type: string, default: debug, locked: true}   # only an admin may change it
      data: {type: file, required: false}                       # a key in the user's bucket
    steps:
      - name: main
        command: [python3, -m, mytool, --message, "{{ message }}", --n, "{{ n }}"]
        resources: {nodes: 1, tasks: 1, cpus_per_task: 1, memory_mb: 512, gpus: 0, walltime: "00:10:00"}
        array: "{{ n }}"                 # optional: a job array of that many tasks
        depends_on: []
        inputs: ["{{ data }}"]
        outputs: [result.txt]
        container: null                # optional image, run with the cluster's runtime

Parameters are validated against their declared type, range, length and enum, and substituted
(``{{ name }}``; any other brace is literal) *into argv elements*: a command is a list of arguments, each later quoted on its own, so a value never
becomes shell syntax whatever it contains. Every parameter is also exported to the job as
``HEROES_PARAM_<NAME>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

FORMAT_VERSION = 1
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
PARAM_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
PARAM_TYPES = ("string", "integer", "number", "boolean", "file")
MAX_STRING = 4096
WALLTIME_RE = re.compile(r"^(?:(\d+)-)?(\d{1,3}):(\d{2}):(\d{2})$")
RESOURCE_KEYS = {"nodes", "tasks", "cpus_per_task", "memory_mb", "gpus", "walltime"}
STEP_KEYS = {
    "name",
    "command",
    "resources",
    "array",
    "depends_on",
    "inputs",
    "outputs",
    "container",
    "description",
}
PARAM_KEYS = {
    "type",
    "default",
    "min",
    "max",
    "enum",
    "max_length",
    "pattern",
    "locked",
    "required",
    "description",
}
TOP_KEYS = {"heroes_template", "name", "version", "application", "description", "parameters", "steps"}


class TemplateError(ValueError):
    """A template document is invalid; the message names the offending field."""

    reason = "invalid-template"


class ParameterError(ValueError):
    """A submitted parameter value is invalid; ``param`` names it."""

    reason = "invalid-parameter"

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"parameter '{param}': {message}")
        self.param = param


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    enum: tuple[Any, ...] | None = None
    max_length: int = MAX_STRING
    pattern: str | None = None
    locked: bool = False
    required: bool = True
    description: str = ""

    def validate(self, value: Any) -> Any:
        """The value converted to the parameter's type, or :class:`ParameterError`."""
        t = self.type
        if t == "boolean":
            if isinstance(value, bool):
                return value
            raise ParameterError(self.name, f"expected true or false, got {value!r}")
        if t == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
                    value = int(value)
                else:
                    raise ParameterError(self.name, f"expected an integer, got {value!r}")
        elif t == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                try:
                    value = float(value) if isinstance(value, str) else None
                except ValueError:
                    value = None
                if value is None:
                    raise ParameterError(self.name, "expected a number")
            if value != value or value in (float("inf"), float("-inf")):
                raise ParameterError(self.name, "expected a finite number")
        elif t in ("string", "file"):
            if not isinstance(value, str):
                raise ParameterError(self.name, f"expected a string, got {type(value).__name__}")
            if len(value) > self.max_length:
                raise ParameterError(self.name, f"longer than {self.max_length} characters")
            if "\x00" in value:
                raise ParameterError(self.name, "contains a NUL character")
            if t == "file":
                value = check_relative_path(value, self.name)
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise ParameterError(self.name, f"does not match the pattern {self.pattern}")
        if self.min is not None and value < self.min:
            raise ParameterError(self.name, f"{value} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ParameterError(self.name, f"{value} is above the maximum {self.max}")
        if self.enum is not None and value not in self.enum:
            raise ParameterError(self.name, f"{value!r} is not one of {list(self.enum)}")
        return value


def check_relative_path(value: str, param: str) -> str:
    """A relative object key or path with no way out of its root (``..``, absolute, control chars)."""
    if not value:
        raise ParameterError(param, "is empty")
    if value.startswith("/") or value.startswith("\\"):
        raise ParameterError(param, "must be a path relative to your storage, not an absolute path")
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or "\\" in value:
        raise ParameterError(param, "contains control characters or backslashes")
    if any(part in ("..", ".") for part in value.split("/")):
        raise ParameterError(param, "may not contain '.' or '..' path segments")
    return value


@dataclass(frozen=True)
class Resources:
    nodes: int = 1
    tasks: int = 1
    cpus_per_task: int = 1
    memory_mb: int = 512
    gpus: int = 0
    walltime_s: int = 3600

    @property
    def cores(self) -> int:
        return self.tasks * self.cpus_per_task


@dataclass(frozen=True)
class Step:
    name: str
    command: tuple[str, ...]
    resources: Resources
    array: str | None = None
    depends_on: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    container: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    application: str
    description: str
    parameters: dict[str, Parameter]
    steps: tuple[Step, ...]
    source: dict = field(default_factory=dict, compare=False, repr=False)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def order(self) -> list[Step]:
        """Steps in a dependency order (validated acyclic at load)."""
        return _toposort(self.steps)

    def resolve(self, params: dict[str, Any] | None, *, admin: bool = False) -> dict[str, Any]:
        """Validate submitted *params* and fill defaults. Locked parameters may only be set by an admin;
        unknown names are refused."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise ParameterError(
                unknown[0], f"unknown parameter; this template takes {sorted(self.parameters)}"
            )
        out: dict[str, Any] = {}
        for name, p in self.parameters.items():
            if name in params:
                if p.locked and not admin and params[name] != p.default:
                    raise ParameterError(name, "is locked by your organization's admin and cannot be changed")
                out[name] = p.validate(params[name])
            elif p.default is not None:
                out[name] = p.default
            elif p.required:
                raise ParameterError(name, "is required")
        return out

    def render_argv(self, step: Step, values: dict[str, Any]) -> list[str]:
        """The step's command with ``{{ param }}`` placeholders replaced inside each argument."""
        return [_substitute(arg, values) for arg in step.command]

    def render_list(self, items: tuple[str, ...], values: dict[str, Any]) -> list[str]:
        """Inputs/outputs with placeholders substituted; empty entries (optional files unset) dropped."""
        out = []
        for item in items:
            v = _substitute(item, values)
            if v:
                out.append(check_relative_path(v, item))
        return out

    def array_size(self, step: Step, values: dict[str, Any]) -> int | None:
        if step.array is None:
            return None
        n = int(_substitute(step.array, values))
        if not 1 <= n <= 10000:
            raise ParameterError(step.name, f"array size {n} must be between 1 and 10000")
        return n

    def environment(self, values: dict[str, Any]) -> dict[str, str]:
        """``HEROES_PARAM_<NAME>`` for every resolved parameter."""
        return {f"HEROES_PARAM_{k.upper()}": _to_text(v) for k, v in values.items()}


def _to_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    return str(v)


PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


def _placeholders(text: str) -> list[str]:
    names = PLACEHOLDER_RE.findall(text)
    for n in names:
        if not PARAM_RE.match(n):
            raise TemplateError(f"placeholder {{{{ {n} }}}} in {text[:60]!r}: parameter names are lowercase")
    return names


def _substitute(text: str, values: dict[str, Any]) -> str:
    return PLACEHOLDER_RE.sub(lambda m: _to_text(values.get(m.group(1))), text)


def parse_walltime(v: Any, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    m = WALLTIME_RE.match(str(v))
    if not m:
        raise TemplateError(f"{where}: walltime {v!r} must be seconds or [D-]HH:MM:SS")
    d, h, mi, s = (int(x) if x else 0 for x in m.groups())
    if mi > 59 or s > 59:
        raise TemplateError(f"{where}: walltime {v!r} has minutes or seconds above 59")
    total = ((d * 24 + h) * 60 + mi) * 60 + s
    if total <= 0:
        raise TemplateError(f"{where}: walltime must be positive")
    return total


def _int(d: dict, key: str, default: int, lo: int, hi: int, where: str) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise TemplateError(f"{where}.{key}: expected an integer between {lo} and {hi}, got {v!r}")
    return v


def _toposort(steps: tuple[Step, ...]) -> list[Step]:
    by = {s.name: s for s in steps}
    done: list[Step] = []
    seen: set[str] = set()
    visiting: set[str] = set()

    def visit(s: Step, chain: list[str]) -> None:
        if s.name in seen:
            return
        if s.name in visiting:
            raise TemplateError(f"steps: dependency cycle {' -> '.join([*chain, s.name])}")
        visiting.add(s.name)
        for d in s.depends_on:
            visit(by[d], [*chain, s.name])
        visiting.discard(s.name)
        seen.add(s.name)
        done.append(s)

    for s in steps:
        visit(s, [])
    return done


def _parse_parameter(name: str, d: Any) -> Parameter:
    where = f"parameters.{name}"
    if not PARAM_RE.match(str(name)):
        raise TemplateError(f"{where}: names are lowercase letters, digits and _ (starting with a letter)")
    if not isinstance(d, dict):
        raise TemplateError(f"{where}: expected a mapping with at least 'type'")
    extra = set(d) - PARAM_KEYS
    if extra:
        raise TemplateError(f"{where}: unknown field(s) {sorted(extra)}")
    t = d.get("type")
    if t not in PARAM_TYPES:
        raise TemplateError(f"{where}.type: must be one of {list(PARAM_TYPES)}")
    enum = d.get("enum")
    if enum is not None and (not isinstance(enum, list) or not enum):
        raise TemplateError(f"{where}.enum: expected a non-empty list")
    for k in ("min", "max"):
        if d.get(k) is not None and (
            t not in ("integer", "number") or isinstance(d[k], bool) or not isinstance(d[k], int | float)
        ):
            raise TemplateError(f"{where}.{k}: only integer and number parameters take a numeric {k}")
    if d.get("min") is not None and d.get("max") is not None and d["min"] > d["max"]:
        raise TemplateError(f"{where}: min {d['min']} is above max {d['max']}")
    max_length = d.get("max_length", MAX_STRING)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= MAX_STRING:
        raise TemplateError(f"{where}.max_length: expected an integer between 1 and {MAX_STRING}")
    if d.get("pattern") is not None:
        try:
            re.compile(d["pattern"])
        except re.error as e:
            raise TemplateError(f"{where}.pattern: not a valid regular expression ({e})") from None
    p = Parameter(
        name=name,
        type=t,
        default=d.get("default"),
        min=d.get("min"),
        max=d.get("max"),
        enum=tuple(enum) if enum is not None else None,
        max_length=max_length,
        pattern=d.get("pattern"),
        locked=bool(d.get("locked", False)),
        required=bool(d.get("required", True)),
        description=str(d.get("description", "")),
    )
    if p.default is not None:
        try:
            p.validate(p.default)
        except ParameterError as e:
            raise TemplateError(f"{where}.default: {e}") from None
    if p.locked and p.default is None:
        raise TemplateError(f"{where}: a locked parameter needs a default")
    return p


def _parse_step(i: int, d: Any, params: dict[str, Parameter]) -> Step:
    where = f"steps[{i}]"
    if not isinstance(d, dict):
        raise TemplateError(f"{where}: expected a mapping")
    extra = set(d) - STEP_KEYS
    if extra:
        raise TemplateError(f"{where}: unknown field(s) {sorted(extra)}")
    name = d.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise TemplateError(f"{where}.name: lowercase letters, digits and -, starting with a letter")
    where = f"steps.{name}"
    cmd = d.get("command")
    if isinstance(cmd, str):
        raise TemplateError(f"{where}.command: must be a list of arguments (argv), not a shell string")
    if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str | int | float) for a in cmd):
        raise TemplateError(f"{where}.command: expected a non-empty list of arguments")
    cmd = [str(a) for a in cmd]
    texts = list(cmd)
    for key in ("inputs", "outputs", "depends_on"):
        v = d.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise TemplateError(f"{where}.{key}: expected a list of strings")
    texts += d.get("inputs", []) + d.get("outputs", [])
    array = d.get("array")
    if array is not None:
        array = str(array)
        m = PLACEHOLDER_RE.fullmatch(array.strip())
        if not (array.isdigit() or m):
            raise TemplateError(f"{where}.array: a number of tasks or a single {{{{ integer_parameter }}}}")
        if m and params.get(m.group(1), Parameter("", "string")).type != "integer":
            raise TemplateError(f"{where}.array: {array} must name an integer parameter")
        texts.append(array)
    for t in texts:
        for ph in _placeholders(t):
            if ph not in params:
                raise TemplateError(f"{where}: placeholder {{{{ {ph} }}}} names no declared parameter")
    for out in d.get("outputs", []):
        if not PLACEHOLDER_RE.search(out):
            try:
                check_relative_path(out, f"{where}.outputs")
            except ParameterError as e:
                raise TemplateError(str(e)) from None
    r = d.get("resources", {}) or {}
    if not isinstance(r, dict) or set(r) - RESOURCE_KEYS:
        raise TemplateError(
            f"{where}.resources: unknown field(s) {sorted(set(r) - RESOURCE_KEYS)}; allowed {sorted(RESOURCE_KEYS)}"
        )
    res = Resources(
        nodes=_int(r, "nodes", 1, 1, 100000, f"{where}.resources"),
        tasks=_int(r, "tasks", 1, 1, 10000000, f"{where}.resources"),
        cpus_per_task=_int(r, "cpus_per_task", 1, 1, 1024, f"{where}.resources"),
        memory_mb=_int(r, "memory_mb", 512, 1, 64 * 1024 * 1024, f"{where}.resources"),
        gpus=_int(r, "gpus", 0, 0, 1024, f"{where}.resources"),
        walltime_s=parse_walltime(r.get("walltime", 3600), f"{where}.resources"),
    )
    container = d.get("container")
    if container is not None and (
        not isinstance(container, str) or not re.fullmatch(r"[\w./:@+-]{1,255}", container)
    ):
        raise TemplateError(f"{where}.container: not a valid image reference")
    return Step(
        name=name,
        command=tuple(cmd),
        resources=res,
        array=array,
        depends_on=tuple(d.get("depends_on", [])),
        inputs=tuple(d.get("inputs", [])),
        outputs=tuple(d.get("outputs", [])),
        container=container,
        description=str(d.get("description", "")),
    )


def load_template(doc: dict | str) -> Template:
    """Parse and validate a template document (a mapping, or YAML text)."""
    if isinstance(doc, str):
        try:
            doc = yaml.safe_load(doc)
        except yaml.YAMLError as e:
            raise TemplateError(f"not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise TemplateError(
            "a template is a mapping with heroes_template, name, version, parameters and steps"
        )
    extra = set(doc) - TOP_KEYS
    if extra:
        raise TemplateError(f"unknown top-level field(s) {sorted(extra)}; allowed {sorted(TOP_KEYS)}")
    if doc.get("heroes_template") != FORMAT_VERSION:
        raise TemplateError(f"heroes_template: this version of HEROES reads format {FORMAT_VERSION}")
    name = doc.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise TemplateError(
            "name: lowercase letters, digits and -, starting with a letter, at most 63 characters"
        )
    version = _int(doc, "version", 1, 1, 1000000, "template")
    app = doc.get("application", name)
    if not isinstance(app, str) or not re.fullmatch(r"[A-Za-z0-9._:/-]{1,128}", app):
        raise TemplateError("application: letters, digits and ._:/- (at most 128)")
    raw_params = doc.get("parameters", {}) or {}
    if not isinstance(raw_params, dict):
        raise TemplateError("parameters: expected a mapping of name -> declaration")
    params = {n: _parse_parameter(n, d) for n, d in raw_params.items()}
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise TemplateError("steps: expected a non-empty list")
    steps = tuple(_parse_step(i, s, params) for i, s in enumerate(raw_steps))
    names = [s.name for s in steps]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise TemplateError(f"steps: duplicate step name(s) {sorted(dup)}")
    for s in steps:
        for dep in s.depends_on:
            if dep not in names:
                raise TemplateError(f"steps.{s.name}.depends_on: no step named {dep!r}")
    t = Template(
        name=name,
        version=version,
        application=app,
        description=str(doc.get("description", "")),
        parameters=params,
        steps=steps,
        source=doc,
    )
    t.order()  # raises on cycles
    return t
