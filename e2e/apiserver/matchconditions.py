"""``matchConditions`` of admission webhooks, checked on write and evaluated as kube-apiserver does.

On write (admissionregistration validation): at most 64 conditions per webhook, each with a
qualified ``name`` unique within the webhook and a non-empty ``expression`` that compiles.

On a request (``webhook/matchconditions/matcher.go`` and ``generic/webhook.go``), after the rules
and the namespace and object selectors matched: the conditions are evaluated in order with the CEL
variables ``object`` (null for DELETE), ``oldObject`` (null for CREATE) and ``request`` (the
AdmissionRequest without its objects). A condition that evaluates to false skips the webhook at
once. Otherwise, when a condition failed to evaluate (a runtime error, or a value that is not a
bool), ``failurePolicy: Fail`` refuses the request with 403 Forbidden (``pods "p" is forbidden:
expression '...' resulted in error: no such key: x``; several errors are listed in brackets), and
``Ignore`` skips the webhook. All true: the webhook is called.

Equality is CEL's heterogeneous equality (``object != null`` is false for a DELETE, not an error).
Not modelled, and said so: the ``authorizer`` variables (an expression that uses them fails to
evaluate here, so it is skipped or refused by ``failurePolicy``), the Kubernetes CEL libraries
beyond CEL's standard functions, the compile-time type check (a non-bool result is an evaluation
error here, a creation error upstream), and the cost budget (upstream: 1,000,000 units per
expression and 2,500,000 per webhook and request; exceeding it is an evaluation error).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import celpy
import celpy.celtypes as ct
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError, bool_eq

Obj = dict[str, Any]

MAX_MATCH_CONDITIONS = 64
"""Upstream's limit per webhook (``validateMatchConditions``)."""

_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV = celpy.Environment()
_NUMBERS = (ct.IntType, ct.UintType, ct.DoubleType)


def _number(value: Any) -> int | float:
    return float(value) if isinstance(value, ct.DoubleType) else int(value)


def _equal(a: Any, b: Any) -> Any:
    """CEL's heterogeneous equality (cel-go, so kube-apiserver): values of different types are unequal,
    ``null`` equals only ``null``, numbers compare across int, uint and double. celpy refuses a
    comparison of different types (``object != null`` would be an error)."""
    if a is None or b is None:
        return ct.BoolType(a is None and b is None)
    if isinstance(a, ct.BoolType) or isinstance(b, ct.BoolType):
        return ct.BoolType(isinstance(a, ct.BoolType) and isinstance(b, ct.BoolType) and bool(a) == bool(b))
    if isinstance(a, _NUMBERS) and isinstance(b, _NUMBERS):
        return ct.BoolType(_number(a) == _number(b))
    if type(a) is not type(b):
        return ct.BoolType(False)
    return bool_eq(a, b)


def _not_equal(a: Any, b: Any) -> Any:
    result = _equal(a, b)
    return result if isinstance(result, CELEvalError) else ct.BoolType(not result)


_FUNCTIONS = {"_==_": _equal, "_!=_": _not_equal}


@dataclass(frozen=True)
class Verdict:
    """The outcome for one webhook: ``call`` it, or not; ``errors`` when a condition failed to
    evaluate and none was false (the caller applies ``failurePolicy``)."""

    call: bool
    errors: tuple[str, ...] = ()
    false_condition: str | None = None


class _CompileError(Exception):
    pass


@lru_cache(maxsize=256)
def _program(expression: str) -> Any:
    try:
        return _ENV.program(_ENV.compile(expression), functions=_FUNCTIONS)
    except Exception as exc:  # celpy raises lark's and its own parse errors
        raise _CompileError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from exc


def _qualified(name: str) -> bool:
    prefix, _, short = name.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(short) <= 63 and _QUALIFIED_NAME.match(short) is not None


def validation_problems(config: Obj) -> Iterator[tuple[str, str]]:
    """(field, message) for every invalid matchCondition of a webhook configuration."""
    for i, hook in enumerate(config.get("webhooks") or []):
        conditions = (hook or {}).get("matchConditions") or []
        where = f"webhooks[{i}].matchConditions"
        if len(conditions) > MAX_MATCH_CONDITIONS:
            yield where, f"Too many: {len(conditions)}: must have at most {MAX_MATCH_CONDITIONS} items"
        names: set[str] = set()
        for j, condition in enumerate(conditions):
            at = f"{where}[{j}]"
            expression = str((condition or {}).get("expression") or "").strip()
            if not expression:
                yield f"{at}.expression", "Required value"
            else:
                try:
                    _program(expression)
                except _CompileError as exc:
                    yield f"{at}.expression", f"Invalid value: {expression!r}: compilation failed: {exc}"
            name = str((condition or {}).get("name") or "")
            if not name:
                yield f"{at}.name", "Required value"
            elif not _qualified(name):
                yield (
                    f"{at}.name",
                    f"Invalid value: {name!r}: name part must consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character",
                )
            elif name in names:
                yield f"{at}.name", f"Duplicate value: {name!r}"
            names.add(name)


def _describe(error: Any) -> str:
    """A CEL runtime error in cel-go's words where they differ from celpy's."""
    text = error.args[0] if isinstance(error, CELEvalError) and error.args and isinstance(error.args[0], str) else ""
    text = text or str(error)
    missing = re.match(r"no such member in mapping: '(.*)'$", text)
    if missing:
        return f"no such key: {missing.group(1)}"
    if "undeclared reference to" in text:
        name = re.search(r"undeclared reference to '([^']*)'", text)
        return f"undeclared reference to '{name.group(1) if name else '?'}' (not modelled by the API server stand-in)"
    return text.splitlines()[0]


def evaluate(conditions: list[Obj], variables: Mapping[str, Any]) -> Verdict:
    """Evaluate ``conditions`` in order over plain-JSON ``variables`` (``object``, ``oldObject``, ``request``)."""
    activation = {name: json_to_cel(value) if value is not None else None for name, value in variables.items()}
    errors: list[str] = []
    for condition in conditions:
        expression = str(condition.get("expression") or "").strip()
        try:
            program = _program(expression)
        except _CompileError as exc:
            errors.append(f"compilation error: {exc}")
            continue
        try:
            result = program.evaluate(activation)
        except CELEvalError as exc:
            errors.append(f"expression '{expression}' resulted in error: {_describe(exc)}")
            continue
        except Exception as exc:  # a standard function raising on its input
            errors.append(f"expression '{expression}' resulted in error: {exc}")
            continue
        if isinstance(result, CELEvalError):
            errors.append(f"expression '{expression}' resulted in error: {_describe(result)}")
        elif not isinstance(result, ct.BoolType | bool):
            errors.append(f"expression '{expression}' resulted in error: must evaluate to bool")
        elif not result:
            return Verdict(call=False, false_condition=str(condition.get("name") or ""))
    if errors:
        return Verdict(call=False, errors=tuple(errors))
    return Verdict(call=True)


def aggregate(errors: tuple[str, ...]) -> str:
    """``utilerrors.NewAggregate``'s text: the one error, or all of them in brackets."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
