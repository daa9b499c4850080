"""Fault injection: make chosen requests fail, stall or drop, a given number of times."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Fault:
    """One rule. ``status`` None = answer normally after ``delay``; ``drop`` = close the connection."""

    method: str | None
    path_regex: re.Pattern[str]
    status: int | None
    count: int | None  # None = unlimited
    delay: float
    drop: bool
    message: str
    hits: int = field(default=0)

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.hits >= self.count

    def matches(self, method: str, path: str) -> bool:
        if self.exhausted:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_regex.search(path) is not None


class Faults:
    """The fault table of one server; the first matching rule that is not exhausted fires."""

    def __init__(self) -> None:
        self._rules: list[Fault] = []

    def add(
        self,
        method: str | None = None,
        path_regex: str = ".*",
        status: int | None = 500,
        count: int | None = 1,
        delay: float = 0.0,
        *,
        drop: bool = False,
        message: str = "injected fault",
    ) -> Fault:
        """Add a rule: requests whose method matches (any when None) and whose path (no query) matches
        ``path_regex`` (``re.search``) get ``status`` after ``delay`` seconds, ``count`` times."""
        rule = Fault(method, re.compile(path_regex), status, count, delay, drop, message)
        self._rules.append(rule)
        return rule

    def clear(self) -> None:
        self._rules.clear()

    def match(self, method: str, path: str) -> Fault | None:
        for rule in self._rules:
            if rule.matches(method, path):
                rule.hits += 1
                return rule
        return None

    @property
    def rules(self) -> list[Fault]:
        return list(self._rules)
