"""Dataclass configs from YAML files and ``key=value`` overrides, checked strictly.

A config is a (usually frozen) dataclass whose defaults are the paper's values. :func:`load_config` starts from
those defaults, applies a YAML file (a mapping, nested like the dataclasses), then command-line overrides such
as ``lr=1e-4`` or ``model.widths=[32,64]`` (values are YAML scalars or flow sequences). Unknown keys and values
of the wrong type raise :class:`ConfigError` naming the dotted key; unknown keys also list the valid ones and
suggest the closest. Nested dataclasses are merged field by field; every other value, ``dict`` fields included,
replaces the default as a whole.

Supported field types: ``bool``, ``int``, ``float`` (ints are converted), ``str``, ``Literal[...]``,
``X | None``, unions, ``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]`` (YAML lists become tuples for tuple fields),
``dict[K, V]``, ``Enum`` (by value), ``pathlib.Path``, ``Any`` and nested dataclasses.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Train:
    ...     lr: float = 1e-4
    ...     widths: tuple[int, ...] = (32, 64)
    >>> load_config(Train, overrides=["lr=3e-4", "widths=[16,32,64]"])
    Train(lr=0.0003, widths=(16, 32, 64))
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from pipelines import storage

__all__ = [
    "ConfigError",
    "config_from_dict",
    "config_method",
    "config_to_dict",
    "load_config",
    "method_config_with",
    "parse_overrides",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, override or value is invalid; the message names the key or the file."""


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-4`` as a float (YAML 1.1 needs a dot: ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    ignore: Sequence[str] = ("method",),
) -> T:
    """Build ``cls`` from its defaults, an optional YAML file and ``key=value`` overrides.

    Args:
        cls: The config dataclass.
        path: YAML file (local path or any :mod:`pipelines.storage` URI); ``None`` uses the defaults. An empty
            file means "all defaults".
        overrides: ``key=value`` items applied after the file; ``a.b=value`` reaches nested fields.
        ignore: Top-level keys to drop before checking (e.g. ``method``, which picks the config class), unless
            ``cls`` has a field of that name.

    Returns:
        A new ``cls`` instance.

    Raises:
        ConfigError: If the file is missing or not a YAML mapping, an override is malformed, a key is unknown,
            a value has the wrong type, or the dataclass rejects the values.

    Example:
        >>> cfg = load_config(LussAeConfig, "configs/luss_ae/ped2.yaml", ["epochs=2"])  # doctest: +SKIP
    """
    _require_dataclass_type(cls)
    data = _read_yaml(path) if path is not None else {}
    merged = _deep_merge(data, parse_overrides(overrides))
    names = {f.name for f in dataclasses.fields(cls)}
    for key in ignore:
        if key not in names:
            merged.pop(key, None)
    return config_from_dict(cls, merged)


def config_method(path: str | Path) -> str | None:
    """The ``method:`` key of a YAML config (which method the file configures), or ``None`` if it has none.

    Example:
        >>> config_method("configs/std/synthetic.yaml")  # doctest: +SKIP
        'std'
    """
    method = _read_yaml(path).get("method")
    if method is not None and not isinstance(method, str):
        raise ConfigError(f"{path}: 'method' must be a method name, got {method!r}")
    return method


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build ``cls`` from a (possibly partial, possibly nested) mapping, converting and checking every value.

    Args:
        cls: The config dataclass.
        data: Field values; missing fields keep their defaults. Lists are accepted for tuple fields, so the
            output of :func:`config_to_dict` round-trips.

    Returns:
        A new ``cls`` instance.

    Raises:
        ConfigError: On unknown keys, missing required keys, wrong types or values the dataclass rejects.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Opt:
        ...     lr: float = 0.1
        ...     betas: tuple[float, float] = (0.9, 0.999)
        >>> config_from_dict(Opt, {"lr": 1, "betas": [0.5, 0.9]})
        Opt(lr=1.0, betas=(0.5, 0.9))
    """
    _require_dataclass_type(cls)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__} expects a mapping of config keys, got {type(data).__name__}")
    return _build(cls, data, prefix="", base=None)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-able dict of a config instance (tuples become lists, enums their values, paths strings).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Opt:
        ...     betas: tuple[float, float] = (0.9, 0.999)
        >>> config_to_dict(Opt())
        {'betas': [0.9, 0.999]}
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"config_to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _plain(getattr(cfg, f.name), f.name) for f in dataclasses.fields(cfg) if f.init}


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a=1", "b.c=[1,2]"]`` into the nested mapping ``{"a": 1, "b": {"c": [1, 2]}}``.

    Values are parsed as YAML (``true``, ``1e-4``, ``[1, 2]``, ``null``; quote to force a string). Later items win.

    Raises:
        ConfigError: If an item is not ``key=value``, a key part is empty, or a key is used both as a value
            and as a parent (``a=1`` with ``a.b=2``).

    Example:
        >>> parse_overrides(["epochs=2", "model.widths=[16, 32]", "name='007'"])
        {'epochs': 2, 'model': {'widths': [16, 32]}, 'name': '007'}
    """
    if isinstance(items, str):
        items = [items]
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        parts = key.strip().split(".")
        if not sep or any(not p or p != p.strip() for p in parts):
            raise ConfigError(f"Override {item!r} must look like key=value (e.g. lr=0.001 or model.width=64)")
        try:
            value = yaml.load(raw, Loader=_Loader)  # _Loader is a SafeLoader
        except yaml.YAMLError as exc:
            raise ConfigError(f"Override {item!r}: value is not valid YAML ({exc})") from None
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                parent = ".".join(parts[: depth + 1])
                raise ConfigError(f"Override {item!r} conflicts with an earlier value for {parent!r}")
            node = child
        node[parts[-1]] = value
    return result


# ----------------------------------------------------------------------------------------------------------------
# Reading


def _read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        text = storage.read_text(str(path))
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"Config path is a directory, not a YAML file: {path}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"Invalid YAML in {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ----------------------------------------------------------------------------------------------------------------
# Building and checking


def _require_dataclass_type(cls: Any) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"Expected a dataclass type, got {cls!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints resolves string annotations (``from __future__ import annotations``).
    try:
        return get_type_hints(cls)
    except NameError as exc:
        raise TypeError(f"Cannot resolve the field annotations of {cls.__name__}: {exc}") from None


def _build(cls: type[T], data: Mapping[Any, Any], prefix: str, base: T | None) -> T:
    """``cls`` from ``data`` on top of ``base`` (or the defaults); ``prefix`` is the dotted path for messages."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_key_message(cls, key, prefix, sorted(fields)))
    if base is None:
        missing = [n for n, f in fields.items() if n not in data and _has_no_default(f)]
        if missing:
            raise ConfigError(f"Missing required config key(s) {', '.join(prefix + n for n in missing)}")
    hints = _hints(cls)
    values = {}
    for name, value in data.items():
        key = prefix + name
        nested = _dataclass_in(hints[name])
        if nested is not None and isinstance(value, Mapping):
            current = getattr(base, name) if base is not None else _default(fields[name])
            values[name] = _build(nested, value, key + ".", current if isinstance(current, nested) else None)
        else:
            values[name] = _convert(value, hints[name], key)
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # the dataclass's own checks (__post_init__)
        raise ConfigError(f"Invalid {prefix.rstrip('.') or cls.__name__} config: {exc}") from None


def _unknown_key_message(cls: type, key: Any, prefix: str, valid: list[str]) -> str:
    message = f"Unknown config key {prefix + str(key)!r} for {cls.__name__}"
    close = difflib.get_close_matches(str(key), valid, n=1)
    if close:
        message += f"; did you mean {prefix + close[0]!r}?"
    return message + f" Valid keys: {', '.join(prefix + v for v in valid)}"


def _has_no_default(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass type of a ``D`` or ``D | None`` annotation, else ``None``."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if _is_union(tp):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _dataclass_in(members[0])
    return None


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _wrong_type(key: str, tp: Any, value: Any) -> ConfigError:
    return ConfigError(f"Config key {key!r} expects {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _convert(value: Any, tp: Any, key: str) -> Any:  # one branch per supported annotation
    """``value`` converted to the annotation ``tp``, or a :class:`ConfigError` naming ``key``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return allowed
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(f"Config key {key!r} must be one of {choices}, got {value!r}")
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        for member in (a for a in args if a is not type(None)):
            try:
                return _convert(value, member, key)
            except ConfigError:
                continue
        raise _wrong_type(key, tp, value)
    if tp is type(None):
        if value is None:
            return None
        raise _wrong_type(key, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong_type(key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong_type(key, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _wrong_type(key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong_type(key, tp, value)
    if tp is tuple or origin is tuple:
        return _convert_tuple(value, tp, args, key)
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise _wrong_type(key, tp, value)
        item = args[0] if args else Any
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise _wrong_type(key, tp, value)
        key_tp, value_tp = args if args else (Any, Any)
        return {_convert(k, key_tp, f"{key}.<key>"): _convert(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _build(tp, value, key + ".", None)
        raise _wrong_type(key, tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise ConfigError(f"Config key {key!r} must be one of {choices}, got {value!r}") from None
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)):
            return tp(value)
        raise _wrong_type(key, tp, value)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _wrong_type(key, tp, value)
    raise ConfigError(f"Config key {key!r} has an unsupported annotation {_type_name(tp)}")


def _convert_tuple(value: Any, tp: Any, args: tuple[Any, ...], key: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise _wrong_type(key, tp, value)
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"Config key {key!r} expects {len(args)} items ({_type_name(tp)}), got {len(value)}")
    return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


def _plain(value: Any, key: str) -> Any:
    """A JSON-able copy of a config value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), f"{key}.{f.name}") for f in dataclasses.fields(value) if f.init}
    if isinstance(value, enum.Enum):
        return _plain(value.value, key)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"Config value {key!r} of type {type(value).__name__} cannot be written as JSON")


def method_config_with(cls: type, base: Any, overrides: Mapping[str, Any]) -> Any:
    """``base`` (a config instance) with ``overrides`` applied; ``a.b`` keys reach nested dataclass fields.

    Raises:
        ConfigError: naming the key when a field is unknown or a value is rejected by the config.

    A value that is a mapping sets each of its fields (linked fields, e.g. switching a task off in training and
    in fusion together); its key only names the group.

    Example:
        >>> from vad_models.luss_ae.config import LussAeConfig
        >>> cfg = method_config_with(LussAeConfig, LussAeConfig(), {"prp": {"lambda_prp": 0.0, "alpha_prp": 0.0}})
        >>> cfg.lambda_prp, cfg.alpha_prp
        (0.0, 0.0)
    """
    data = config_to_dict(base)
    for key, value in _expand(overrides).items():
        target = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(target.get(part), dict):
                raise ConfigError(f"{key!r}: {part!r} is not a nested config of {cls.__name__}")
            target = target[part]
        if leaf not in target:
            raise ConfigError(f"unknown config key {key!r} for {cls.__name__}; valid keys: {sorted(data)}")
        target[leaf] = value
    return config_from_dict(cls, data)


def _expand(point: Mapping[str, Any]) -> dict[str, Any]:
    """Grid values that are mappings set several linked fields at once; their grid key is only a label."""
    fields: dict[str, Any] = {}
    for key, value in point.items():
        fields.update({str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {key: value})
    return fields
