"""The metric names, labels and Grafana variables a PromQL expression uses: a small reader,
enough for dashboard queries (tests/integration/test_dashboards.py keeps them honest)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


# -- PromQL: the names an expression uses ---------------------------------------------------------
@dataclass
class PromQLNames:
    """What one PromQL expression refers to: metric names, label matchers and grouping labels."""

    metrics: set[str] = field(default_factory=set)
    matchers: list[tuple[str | None, str, str, str]] = field(default_factory=list)
    """(metric or None, label, operator, value) of every ``{…}`` matcher but ``__name__``."""
    grouping: set[str] = field(default_factory=set)
    """Labels of ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``."""
    variables: set[str] = field(default_factory=set)
    """Grafana variables (``$x``, ``${x}``, ``[[x]]``) outside string literals."""

    def labels_of(self, metric: str) -> set[str]:
        return {label for name, label, _, _ in self.matchers if name == metric}


_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)[A-Za-z0-9_]*")
_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)(?::[^\]]*)?\]\]")
_OPERATORS = ("=~", "!~", "!=", "=")
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})


def _skip_space(text: str, i: int) -> int:
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text[i] == "#":  # a comment, to the end of the line
            end = text.find("\n", i)
            i = len(text) if end < 0 else end + 1
        else:
            break
    return i


def _string(text: str, i: int) -> tuple[str, int]:
    """The literal starting at ``text[i]`` (a quote) and the index after it (escapes kept raw)."""
    quote, j = text[i], i + 1
    while j < len(text) and text[j] != quote:
        j += 2 if text[j] == "\\" and quote != "`" else 1
    if j >= len(text):
        raise ValueError(f"unterminated string at {i} in {text!r}")
    return text[i + 1:j], j + 1


def _matchers(text: str, i: int, metric: str | None, found: PromQLNames) -> int:
    """Read ``{label op "value", …}`` from ``text[i] == "{"``; the index after the ``}``."""
    i += 1
    named: list[str] = []
    local: list[tuple[str, str, str]] = []
    while True:
        i = _skip_space(text, i)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        if i >= len(text):
            raise ValueError(f"unterminated matchers in {text!r}")
        if text[i] == "}":
            break
        label = _IDENT.match(text, i)
        if label is None:
            raise ValueError(f"expected a label name at {i} in {text!r}")
        i = _skip_space(text, label.end())
        operator = next((op for op in _OPERATORS if text.startswith(op, i)), None)
        if operator is None:
            raise ValueError(f"expected a matcher operator at {i} in {text!r}")
        i = _skip_space(text, i + len(operator))
        if i >= len(text) or text[i] not in "\"'`":
            raise ValueError(f"expected a quoted value at {i} in {text!r}")
        value, i = _string(text, i)
        if label.group() != "__name__":
            local.append((label.group(), operator, value))
        elif operator == "=":
            named.append(value)
        else:
            raise ValueError(f"metric names chosen by {operator} cannot be checked: {text!r}")
    found.metrics.update(named)
    owners: list[str | None] = [*named] or [metric]
    for owner in owners:  # {__name__="x", a="b"}: the matchers belong to x
        found.matchers.extend((owner, label, op, value) for label, op, value in local)
    return i + 1


def promql_names(expr: str) -> PromQLNames:
    """The metric names, matchers and grouping labels of a PromQL expression (with Grafana variables).

    Not a full parser: it reads what a dashboard needs checked, skips string literals, comments,
    numbers, durations, ``[…]`` ranges and Grafana variables, and tells a metric name (an
    identifier not followed by ``(``, not a keyword) from a function or aggregation.
    """
    found = PromQLNames()
    for match in _VARIABLE.finditer(_without_strings(expr)):
        found.variables.add(next(g for g in match.groups() if g))
    i = 0
    while True:
        i = _skip_space(expr, i)
        if i >= len(expr):
            return found
        char = expr[i]
        if char in "\"'`":
            _, i = _string(expr, i)
        elif char == "$":
            variable = _VARIABLE.match(expr, i)
            i = variable.end() if variable else i + 1
        elif char == "[":  # a range, a subquery's step or a [[variable]]
            depth = 0
            while i < len(expr):
                depth += {"[": 1, "]": -1}.get(expr[i], 0)
                i += 1
                if depth == 0:
                    break
        elif char == "{":
            i = _matchers(expr, i, None, found)
        elif char.isdigit() or (char == "." and expr[i + 1:i + 2].isdigit()):
            number = _NUMBER.match(expr, i)
            i = number.end() if number else i + 1
        elif (ident := _IDENT.match(expr, i)) is not None:
            name, i = ident.group(), ident.end()
            after = _skip_space(expr, i)
            following = expr[after] if after < len(expr) else ""
            if name.lower() in _GROUPING:
                if following == "(":
                    close = expr.index(")", after)
                    found.grouping.update(part.strip() for part in expr[after + 1:close].split(",") if part.strip())
                    i = close + 1
            elif name.lower() in _KEYWORDS or following == "(" or _starts_grouping(expr, after):
                pass  # a keyword, a function or an aggregation (`sum by (x) (…)` too)
            else:
                found.metrics.add(name)
                if following == "{":
                    i = _matchers(expr, after, name, found)
        else:
            i += 1


def _starts_grouping(expr: str, i: int) -> bool:
    """Whether ``by (`` or ``without (`` starts at ``i``: what follows an aggregation's name."""
    word = _IDENT.match(expr, i)
    return word is not None and word.group().lower() in ("by", "without") and expr[_skip_space(expr, word.end()):].startswith("(")


def _without_strings(expr: str) -> str:
    """``expr`` with its string literals emptied (variables inside them are matcher values)."""
    out, i = [], 0
    while i < len(expr):
        if expr[i] in "\"'`":
            _, end = _string(expr, i)
            out.append('""')
            i = end
        else:
            out.append(expr[i])
            i += 1
    return "".join(out)


def string_variables(expr: str) -> set[str]:
    """Grafana variables anywhere in ``expr``, string literals included."""
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(expr)}


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


def variable_query_names(query: str) -> PromQLNames:
    """The names a Grafana Prometheus variable query uses (``label_values(selector, label)`` or PromQL)."""
    values = _LABEL_VALUES.match(query)
    if values is None:
        return promql_names(query)
    found = promql_names(values["selector"] or "")
    label = values["label"]
    owners: list[str | None] = [*sorted(found.metrics)] or [None]
    found.matchers.extend((metric, label, "label_values", "") for metric in owners)
    return found


# -- the dashboard --------------------------------------------------------------------------------
