"""A parameter form generated from a template's parameter declarations, validated as you type.

Each declaration (``{type, default, min, max, enum, max_length, pattern, locked, required,
description}``, see :mod:`jupyter_heroes.workflows.templates`) becomes one core ipywidget:

========================  ==============================================
declaration               widget
========================  ==============================================
``enum``                  ``Dropdown`` of the allowed values
``integer``               ``IntText`` (min/max checked inline)
``number``                ``FloatText`` (min/max checked inline)
``boolean``               ``Checkbox``
``string``, ``file``      ``Text`` (length, pattern, path rules inline)
``locked: true``          the same, disabled, holding the admin's value
========================  ==============================================

A bad value shows a red message next to its field and makes :attr:`ParameterForm.valid` false, so
the submit button can be disabled before anything reaches the service. The service validates again
(it is the authority); these checks only spare a round trip.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as w

ERROR_STYLE = "color:#c62828;font-size:90%"
DESCRIPTION_WIDTH = "130px"
MAX_STRING = 4096


def check_value(decl: Mapping[str, Any], value: Any) -> str:
    """'' if *value* is acceptable for the declaration *decl*, else what is wrong with it."""
    kind = decl.get("type", "string")
    if kind == "boolean":
        return "" if isinstance(value, bool) else "expected true or false"
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "expected an integer" if kind == "integer" else "expected a number"
        if kind == "integer" and not float(value).is_integer():
            return "expected an integer"
        if isinstance(value, float) and not math.isfinite(value):
            return "expected a finite number"
        lo, hi = decl.get("min"), decl.get("max")
        if lo is not None and value < lo:
            return f"must be at least {_num(lo)}"
        if hi is not None and value > hi:
            return f"must be at most {_num(hi)}"
    else:
        if not isinstance(value, str):
            return "expected text"
        max_length = decl.get("max_length", MAX_STRING)
        if len(value) > max_length:
            return f"at most {max_length} characters ({len(value)} now)"
        if "\x00" in value:
            return "contains a NUL character"
        if kind == "file":
            problem = _path_problem(value)
            if problem:
                return problem
        pattern = decl.get("pattern")
        if pattern and not re.fullmatch(pattern, value):
            return f"must match {pattern}"
    enum = decl.get("enum")
    if enum is not None and value not in enum:
        return f"must be one of {', '.join(map(str, enum))}"
    return ""


def _num(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _path_problem(value: str) -> str:
    if value.startswith(("/", "\\")):
        return "a path in your storage, not an absolute path"
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or "\\" in value:
        return "no control characters or backslashes"
    if any(part in ("..", ".") for part in value.split("/")):
        return "no '.' or '..' in the path"
    return ""


class ParameterField:
    """One parameter: its input widget, its inline error, and its typed value."""

    def __init__(
        self, name: str, decl: Mapping[str, Any], on_change: Callable[[], None] | None = None
    ) -> None:
        self.name = name
        self.decl = dict(decl)
        self.kind = self.decl.get("type", "string")
        self.locked = bool(self.decl.get("locked", False))
        self.optional = self.decl.get("required", True) is False or "default" in self.decl
        self.input = self._make_input()
        self.input.add_class("heroes-param")
        self.input.add_class(f"heroes-param-{name}")
        self.error = w.HTML("", layout=w.Layout(margin="0 8px"))
        self.error.add_class("heroes-param-error")
        hint = self._hint()
        self.hint = w.HTML(f"<span style='color:#666;font-size:90%'>{_esc(hint)}</span>" if hint else "")
        self.box = w.HBox([self.input, self.error, self.hint], layout=w.Layout(align_items="center"))
        self._on_change = on_change
        self.input.observe(self._changed, names="value")
        self.validate()

    def _make_input(self) -> w.ValueWidget:
        d = self.decl
        default = d.get("default")
        common: dict[str, Any] = {
            "description": self.name,
            "disabled": self.locked,
            "style": {"description_width": DESCRIPTION_WIDTH},
            "layout": w.Layout(width="360px"),
        }
        if d.get("description"):
            common["tooltip"] = str(d["description"])
        if d.get("enum") is not None:
            options = list(d["enum"])
            value = default if default in options else options[0]
            return w.Dropdown(options=options, value=value, **common)
        if self.kind == "boolean":
            common.pop("style")
            return w.Checkbox(value=bool(default), indent=False, **common)
        if self.kind == "integer":
            start = default if isinstance(default, int) else d.get("min", 0)
            return w.IntText(value=int(start or 0), continuous_update=True, **common)
        if self.kind == "number":
            start = default if isinstance(default, int | float) else d.get("min", 0.0)
            return w.FloatText(value=float(start or 0.0), continuous_update=True, **common)
        placeholder = "a path in your storage" if self.kind == "file" else ""
        return w.Text(
            value="" if default is None else str(default),
            placeholder=placeholder,
            continuous_update=True,
            **common,
        )

    def _hint(self) -> str:
        d = self.decl
        parts = []
        if self.locked:
            parts.append("locked by your organization's admin")
        lo, hi = d.get("min"), d.get("max")
        if lo is not None and hi is not None:
            parts.append(f"{_num(lo)} to {_num(hi)}")
        elif lo is not None:
            parts.append(f"at least {_num(lo)}")
        elif hi is not None:
            parts.append(f"at most {_num(hi)}")
        if d.get("description"):
            parts.append(str(d["description"]))
        if self.kind == "file" and not self.optional:
            parts.append("required")
        return "; ".join(parts)

    def _changed(self, _change: Any = None) -> None:
        self.validate()
        if self._on_change is not None:
            self._on_change()

    @property
    def omitted(self) -> bool:
        """An optional text parameter left empty is not sent (the template's default applies)."""
        return self.kind in ("string", "file") and self.input.value == "" and self.optional

    @property
    def value(self) -> Any:
        return self.input.value

    @value.setter
    def value(self, v: Any) -> None:
        self.input.value = v

    def validate(self) -> str:
        """Check the current value; show and return the problem ('' when fine)."""
        if self.locked or self.omitted:
            problem = ""
        elif self.kind in ("string", "file") and self.input.value == "" and not self.optional:
            problem = "required"
        else:
            problem = check_value(self.decl, self.input.value)
        self.problem = problem
        self.error.value = f"<span style='{ERROR_STYLE}'>{_esc(problem)}</span>" if problem else ""
        if problem:
            self.input.add_class("heroes-invalid")
        else:
            self.input.remove_class("heroes-invalid")
        return problem


class ParameterForm:
    """The form of one template: :attr:`box` (a VBox to display), :attr:`fields`, :attr:`valid`,
    :meth:`values` (the parameters to submit)."""

    def __init__(self, template: Mapping[str, Any], on_change: Callable[[], None] | None = None) -> None:
        self.template = template
        self._on_change = on_change
        decls = template.get("parameters") or {}
        self.fields: dict[str, ParameterField] = {
            name: ParameterField(name, decl, self._changed) for name, decl in decls.items()
        }
        children: list[w.Widget] = [f.box for f in self.fields.values()]
        if not children:
            children = [w.HTML("<i>This template has no parameters.</i>")]
        self.box = w.VBox(children)
        self.box.add_class("heroes-form")

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    @property
    def problems(self) -> dict[str, str]:
        return {name: f.problem for name, f in self.fields.items() if f.problem}

    @property
    def valid(self) -> bool:
        return not self.problems

    def values(self) -> dict[str, Any]:
        """The parameters to submit: every field except locked ones (the service fills in the admin's
        value) and optional text left empty."""
        return {name: f.value for name, f in self.fields.items() if not f.locked and not f.omitted}

    def set(self, **values: Any) -> None:
        """Fill fields by name (unknown names are a ``KeyError``)."""
        for name, v in values.items():
            self.fields[name].value = v


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
