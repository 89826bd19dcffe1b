"""Kubernetes label selectors, matched locally.

`report` lists every pod once and picks the plugin's pods out of that list
itself, so it needs the selector syntax kubectl accepts: `k=v`, `k==v`,
`k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists) and `!k` (absent), joined
by commas. The `kubernetes` client has no matcher of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Requirement = Callable[[Mapping[str, str]], bool]

_SET = re.compile(r"^([^\s!=,()]+)\s+(in|notin)\s+\(([^()]*)\)$")
_EQUALITY = re.compile(r"^([^\s!=,()]+)\s*(==|=|!=)\s*([^\s!=,()]*)$")
_EXISTS = re.compile(r"^(!?)\s*([^\s!=,()]+)$")


def _split(text: str) -> list[str]:
    """Split on the commas that are not inside parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    terms.append(current.strip())
    return terms


def _requirement(term: str) -> Requirement:
    if match := _SET.match(term):
        key, op, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQUALITY.match(term):
        key, op, value = match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(term):
        negate, key = match.group(1) == "!", match.group(2)
        return lambda labels: (key in labels) != negate
    raise ValueError(f"cannot parse {term!r}: expected k=v, k!=v, k in (a,b), k notin (a,b), k or !k")


@dataclass(frozen=True)
class LabelSelector:
    text: str
    _requirements: tuple[Requirement, ...]

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """ValueError naming the term that is wrong; an empty selector matches everything."""
        terms = [t for t in _split(text)] if text.strip() else []
        if any(not t for t in terms):
            raise ValueError(f"{text!r} has an empty term")
        return cls(text, tuple(_requirement(t) for t in terms))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        present = labels or {}
        return all(requirement(present) for requirement in self._requirements)
