"""A typed decode straight from the bytes, derived from a pydantic model, that can only be stricter.

``derive(model)`` builds a msgspec Struct mirroring the model (nested models
included) for a subset of field types whose msgspec rules are a subset of
pydantic's: ``str`` (lengths, patterns anchored with ``\\Z``), ``int``,
``float`` (bounds; no bool as a number), ``bool``, ``None``, ``X | None``,
``list``, ``dict`` with ``str`` keys, ``Literal``, ``Any``, nested models,
and ``datetime`` read as a strict UTC ISO-8601 string. Every Struct forbids
unknown fields: a record with fields its model does not declare is left to
pydantic, so nothing is skipped unparsed. A decode that succeeds is an
acceptance; anything else is decided by pydantic.

Validators cannot be translated in general. A validator function marked with
``implied`` is one the derived type's own rules already guarantee (say a
UTC-string check on a ``datetime``); one marked with ``check`` is run on the
decoded value after the decode (it must only raise, never transform, and
work on Structs as on models). A model with any other validator, an alias, a
strict or string-transforming config, or another field type is not derived:
its records take pydantic's path.
"""

from __future__ import annotations

import datetime as _dt
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import annotated_types as at
import msgspec
from pydantic import BaseModel
from pydantic import functional_validators as fv
from pydantic.fields import FieldInfo

from ..exceptions import _Signal

__all__ = ["Fast", "check", "derive", "implied", "ID_FIELDS"]

#: the envelope's ids, which a producer may also pass as metadata
ID_FIELDS = ("record_id", "schema_version", "user_id", "session_id")

_F = typing.TypeVar("_F", bound=Callable[..., Any])

# What a derived ``datetime`` accepts: a UTC instant in the one form pydantic
# and ``datetime.fromisoformat`` both parse (the date itself checked after).
_UTC = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|\+00:00)\Z"
_CONFIG_OK = {"extra", "title", "json_schema_extra", "frozen", "use_attribute_docstrings", "protected_namespaces"}
_NO_DEPTH = 10**6  # an Any somewhere: depth is not bounded by the type


def implied(func: _F) -> _F:
    """Mark a validator that the derived type's own rules already guarantee."""
    func.__recorder_implied__ = True  # type: ignore[attr-defined]
    return func


def check(func: _F) -> _F:
    """Mark a validator that may run on the decoded value after the typed decode."""
    func.__recorder_check__ = True  # type: ignore[attr-defined]
    return func


def _valid_instant(value: str) -> None:
    _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))  # month 13, Feb 30 and such raise


class _NotDerivable(_Signal):
    """The model (or one of its parts) is outside the subset; says why."""


@dataclass(frozen=True)
class Fast:
    """The derived decode of one model."""

    model: type[BaseModel]
    decoder: msgspec.json.Decoder[Any]
    #: post-decode checks: a function of the decoded Struct that raises if it fails
    verify: Callable[[Any], None] | None
    depth: int  # deepest nesting the type allows (_NO_DEPTH: unbounded)
    #: per id field: its msgspec type (a metadata value must fit it), or None
    #: where the model does not declare it (the value goes to the envelope only)
    id_types: dict[str, Any]
    has_timestamp: bool
    has_source: bool


# A check plan: (attribute, checks on the value, plan for what the value holds)
_Plan = list[tuple[str, list[Callable[[Any], Any]], Any]]


def derive(model: type[BaseModel]) -> Fast | str:
    """The fast decode of ``model``, or the reason it has none."""
    try:
        struct, plan, depth = _Deriver().struct(model)
    except _NotDerivable as e:
        return str(e)
    fields = model.model_fields
    id_types: dict[str, Any] = {}
    for name in ID_FIELDS:
        id_types[name] = struct.__annotations__[name] if name in fields else None
    runner = _runner(plan) if plan else None
    return Fast(model, msgspec.json.Decoder(struct), runner, depth, id_types, "timestamp" in fields,
                "source" in fields)


def _runner(plan: _Plan) -> Callable[[Any], None]:
    def run(obj: Any) -> None:
        for attr, checks, sub in plan:
            value = getattr(obj, attr)
            if value is None or value is msgspec.UNSET:
                continue
            for c in checks:
                c(value)
            if sub is not None:
                sub(value)
    return run


class _Deriver:
    """Walks a model's fields into msgspec types; raises _NotDerivable for anything outside the subset."""

    def __init__(self) -> None:
        self.seen: dict[type[BaseModel], tuple[Any, _Plan, int]] = {}

    def struct(self, model: type[BaseModel]) -> tuple[Any, _Plan, int]:
        if model in self.seen:
            return self.seen[model]
        cfg = model.model_config
        odd = sorted(k for k, v in cfg.items() if k not in _CONFIG_OK and v not in (None, False))
        if odd:
            raise _NotDerivable(f"{model.__name__}: model_config {odd[0]}")
        decorators = model.__pydantic_decorators__
        if decorators.model_validators or decorators.root_validators or decorators.validators:
            raise _NotDerivable(f"{model.__name__}: a model validator")
        field_checks: dict[str, list[Callable[[Any], Any]]] = {}
        for dec in decorators.field_validators.values():
            func = getattr(dec.func, "__func__", dec.func)
            if dec.info.mode != "after" or not getattr(func, "__recorder_check__", False):
                raise _NotDerivable(f"{model.__name__}: field validator {dec.cls_var_name}")
            for f in dec.info.fields:
                field_checks.setdefault(f, []).append(dec.func)
        specs: list[tuple[str, Any, Any]] = []
        plan: _Plan = []
        depth = 0
        for name, info in model.model_fields.items():
            if info.alias not in (None, name) or info.validation_alias not in (None, name):
                raise _NotDerivable(f"{model.__name__}.{name}: an alias")
            tp, checks, sub, d = self.field(info.annotation, list(info.metadata), f"{model.__name__}.{name}")
            checks = checks + field_checks.pop(name, [])
            depth = max(depth, d)
            if name in ID_FIELDS:  # may come as metadata instead: checked after the decode
                specs.append((name, tp | msgspec.UnsetType, msgspec.UNSET))
            elif info.is_required():
                specs.append((name, tp, msgspec.NODEFAULT))
            else:
                specs.append((name, tp, None if info.default is None else msgspec.UNSET))
            if checks or sub is not None:
                plan.append((name, checks, sub))
        if field_checks:
            raise _NotDerivable(f"{model.__name__}: validator of unknown field {sorted(field_checks)[0]}")
        struct = msgspec.defstruct(f"Fast{model.__name__}", [(n, t, d) if d is not msgspec.NODEFAULT else (n, t)
                                                            for n, t, d in specs],
                                   kw_only=True, forbid_unknown_fields=True)
        self.seen[model] = (struct, plan, depth + 1)
        return struct, plan, depth + 1

    def field(self, tp: Any, metadata: list[Any], where: str) -> tuple[Any, list[Callable[[Any], Any]], Any, int]:
        """(msgspec type, checks on the value, runner for what it holds or None, depth)."""
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            inner, *extra = typing.get_args(tp)
            return self.field(inner, extra + metadata, where)
        constraints: dict[str, Any] = {}
        checks: list[Callable[[Any], Any]] = []
        for m in metadata:
            self._constraint(m, constraints, checks, where)
        if tp is Any or tp is object:
            if constraints:
                raise _NotDerivable(f"{where}: constraints on Any")
            return Any, checks, None, _NO_DEPTH
        if tp is type(None):
            return type(None), checks, None, 0
        if tp in (str, int, float, bool):
            if tp is bool and constraints:
                raise _NotDerivable(f"{where}: constraints on bool")
            if tp is str and any(k in constraints for k in ("ge", "gt", "le", "lt")):
                raise _NotDerivable(f"{where}: bounds on str")
            return (typing.Annotated[tp, msgspec.Meta(**constraints)] if constraints else tp), checks, None, 0
        if tp is _dt.datetime:
            if constraints:
                raise _NotDerivable(f"{where}: constraints on datetime")
            return typing.Annotated[str, msgspec.Meta(pattern=_UTC)], checks + [_valid_instant], None, 0
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if constraints:
                raise _NotDerivable(f"{where}: constraints on a model")
            struct, plan, depth = self.struct(tp)
            return struct, checks, (_runner(plan) if plan else None), depth
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            others = [a for a in args if a is not type(None)]
            if len(others) != 1 or len(args) != 2 or constraints:
                raise _NotDerivable(f"{where}: a union other than X | None")
            inner, sub_checks, sub, d = self.field(others[0], [], where)
            return inner | None, checks + sub_checks, sub, d
        if origin is typing.Literal:
            args = typing.get_args(tp)
            if constraints or not all(type(a) in (str, int) for a in args):
                raise _NotDerivable(f"{where}: a Literal of other than str and int")
            return tp, checks, None, 0
        if origin is list:
            (item,) = typing.get_args(tp) or (Any,)
            it, item_checks, sub, d = self.field(item, [], where + "[]")
            meta = {k: v for k, v in constraints.items() if k in ("min_length", "max_length")}
            if len(meta) != len(constraints):
                raise _NotDerivable(f"{where}: constraints on a list")
            lt = typing.Annotated[list[it], msgspec.Meta(**meta)] if meta else list[it]  # type: ignore[valid-type]
            return lt, checks, _each(item_checks, sub, iter), d + 1
        if origin is dict:
            key, value = typing.get_args(tp) or (str, Any)
            kt, key_checks, _, _ = self.field(key, [], where + "{key}")
            if typing.get_origin(kt) is typing.Annotated:
                base = typing.get_args(kt)[0]
            else:
                base = kt
            if base is not str or key_checks:
                raise _NotDerivable(f"{where}: dict keys other than str")
            vt, value_checks, sub, d = self.field(value, [], where + "{}")
            meta = {k: v for k, v in constraints.items() if k in ("min_length", "max_length")}
            if len(meta) != len(constraints):
                raise _NotDerivable(f"{where}: constraints on a dict")
            dt = typing.Annotated[dict[kt, vt], msgspec.Meta(**meta)] if meta else dict[kt, vt]  # type: ignore[valid-type]
            return dt, checks, _each(value_checks, sub, lambda d_: iter(d_.values())), d + 1
        raise _NotDerivable(f"{where}: type {tp!r}")

    @staticmethod
    def _constraint(m: Any, constraints: dict[str, Any], checks: list[Callable[[Any], Any]], where: str) -> None:
        if isinstance(m, FieldInfo):
            for inner in m.metadata:
                _Deriver._constraint(inner, constraints, checks, where)
            return
        if isinstance(m, (fv.AfterValidator, fv.BeforeValidator)):
            func = m.func
            if getattr(func, "__recorder_implied__", False):
                return
            if isinstance(m, fv.AfterValidator) and getattr(func, "__recorder_check__", False):
                checks.append(typing.cast(Callable[[Any], Any], func))  # one-argument checks only
                return
            raise _NotDerivable(f"{where}: validator {getattr(func, '__name__', func)!r}")
        simple = {at.MinLen: ("min_length", "min_length"), at.MaxLen: ("max_length", "max_length"),
                  at.Ge: ("ge", "ge"), at.Gt: ("gt", "gt"), at.Le: ("le", "le"), at.Lt: ("lt", "lt")}
        for cls, (attr, key) in simple.items():
            if isinstance(m, cls):
                constraints[key] = getattr(m, attr)
                return
        pattern = getattr(m, "pattern", None)
        if type(m).__name__ == "_PydanticGeneralMetadata" and set(vars(m)) == {"pattern"} and isinstance(pattern, str):
            constraints["pattern"] = _anchored(pattern, where)
            return
        raise _NotDerivable(f"{where}: metadata {m!r}")


def _each(checks: list[Callable[[Any], Any]], sub: Callable[[Any], None] | None,
          items: Callable[[Any], Any]) -> Callable[[Any], None] | None:
    """A runner applying ``checks`` and ``sub`` to every item of a container, or None if there is nothing to run."""
    if not checks and sub is None:
        return None

    def run(container: Any) -> None:
        for v in items(container):
            if v is None:
                continue
            for c in checks:
                c(v)
            if sub is not None:
                sub(v)
    return run


def _anchored(pattern: str, where: str) -> str:
    """The pattern for Python's ``re`` with pydantic's meaning: ``$`` only at the very end (``\\Z``)."""
    body = pattern[:-1] if pattern.endswith("$") and not pattern.endswith("\\$") else pattern
    if re.search(r"(?<!\\)\$", body):
        raise _NotDerivable(f"{where}: '$' inside a pattern")
    return body + "\\Z" if body is not pattern else pattern
