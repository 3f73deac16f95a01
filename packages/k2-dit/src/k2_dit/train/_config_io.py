"""Lossless JSON round-trip of frozen dataclass configs (nested dataclasses, tuples, Literals)."""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


def class_path(cls: type) -> str:
    """`module:QualName` of a class, the form `import_class` reads back."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str) -> type:
    """Import the dataclass named by `class_path`; raises if it is not a dataclass."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"config class path {path!r} is not of the form 'package.module:Class'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"cannot import config class {path!r} ({err}); install the package that defines it "
            "or pass config_cls=... explicitly"
        ) from err
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise TypeError(f"{path!r} is not a dataclass, so it cannot be a k2 config class")
    return obj


def _encode(value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value, _path=path)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        return [_encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{path}: dict key {k!r} is not a str, which JSON cannot keep")
            out[k] = _encode(v, f"{path}[{k!r}]")
        return out
    raise TypeError(
        f"{path}: a value of type {type(value).__name__} cannot be stored in config.json; "
        "configs may hold numbers, strings, bools, None, tuples, lists, dicts and dataclasses"
    )


def config_to_dict(config: Any, *, _path: str = "config") -> dict[str, Any]:
    """JSON-ready dict of a dataclass's init fields, recursing into nested dataclasses.

    Args:
        config: a dataclass instance.

    Returns:
        A dict of plain JSON values (tuples become lists; `config_from_dict` restores them).
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"{_path}: expected a dataclass instance, got {type(config).__name__}")
    return {
        f.name: _encode(getattr(config, f.name), f"{_path}.{f.name}")
        for f in dataclasses.fields(config)
        if f.init
    }


def _fail(path: str, value: Any, expected: str) -> typing.NoReturn:
    raise ValueError(f"{path}: {value!r} is not a valid {expected}")


def _decode(tp: Any, value: Any, path: str) -> Any:
    if tp is Any or isinstance(tp, TypeVar):
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{path}: {value!r} is not one of the allowed values {list(args)}")
        # Give back the exact literal object (e.g. keeps 1.0 vs 1 as declared).
        return args[args.index(value)]
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _decode(arm, value, path)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(f"{path}: {value!r} matches no member of {tp} ({'; '.join(errors)})")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            _fail(path, value, f"{tp.__name__} (expected a JSON object)")
        return config_from_dict(tp, value, _path=path)
    if origin is tuple or tp is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            _fail(path, value, "tuple (expected a JSON array)")
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            _fail(path, value, f"tuple of length {len(args)}")
        return tuple(
            _decode(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin in (list, Sequence) or tp in (list, Sequence):
        if not isinstance(value, Sequence) or isinstance(value, str):
            _fail(path, value, "list (expected a JSON array)")
        item = args[0] if args else Any
        return [_decode(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            _fail(path, value, "dict (expected a JSON object)")
        vt = args[1] if args else Any
        return {k: _decode(vt, v, f"{path}[{k!r}]") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(path, value, "float")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, value, "int")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            _fail(path, value, "bool")
        return value
    if tp is str:
        if not isinstance(value, str):
            _fail(path, value, "str")
        return value
    if tp is type(None):
        if value is not None:
            _fail(path, value, "None")
        return None
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise TypeError(f"{path}: cannot rebuild a value of annotated type {tp!r} from JSON")


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, _path: str = "config") -> T:
    """Rebuild a dataclass from `config_to_dict` output, using its type annotations.

    Nested dataclasses are rebuilt as their declared classes, tuples stay tuples, floats
    stay floats, and Literal fields are checked against their allowed values. Missing
    fields take their defaults (configs saved before a field was added still load);
    unknown fields are an error.

    Args:
        cls: the dataclass type to build.
        data: a mapping from field name to JSON value.

    Returns:
        `cls(**fields)`, so the class's own validation runs.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{_path}: {cls!r} is not a dataclass type")
    hints = typing.get_type_hints(cls)
    init_fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - init_fields)
    if unknown:
        raise ValueError(
            f"{_path}: {cls.__name__} has no fields {unknown}; the config was written by a "
            f"different version of {class_path(cls)} (known fields: {sorted(init_fields)})"
        )
    kwargs = {
        name: _decode(hints.get(name, Any), value, f"{_path}.{name}")
        for name, value in data.items()
    }
    return cls(**kwargs)
