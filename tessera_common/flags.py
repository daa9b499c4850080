"""Settings given as text (flags, env vars set by the chart): the spellings both programs accept."""

from __future__ import annotations

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})


def parse_bool(value: str) -> bool:
    """``true``/``false`` and their usual spellings (any case); ``ValueError`` for anything else."""
    text = value.strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"{value!r}: expected true or false")


def parse_list(value: str | None) -> tuple[str, ...]:
    """A comma list (``a,b``), trimmed, empty entries dropped; ``None`` is empty."""
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())
