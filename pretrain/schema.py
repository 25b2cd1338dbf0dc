"""Typed values from YAML: build a dataclass from a mapping, with one clear error per wrong key or type.

A leaf module: the config (pretrain.config), the methods' parameters and the benchmark protocols all
build their dataclasses here, so none of them needs to import another to do so.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from pretrain.errors import UserError

# Keys that were renamed, with what to write instead.
RENAMED_KEYS = {
    "optim.lr": "optim.lr was replaced by optim.lr_per_256, the learning rate for 256 images, scaled by "
                "train.batch_size / 256 (for lr 0.4 at batch 1024 write lr_per_256: 0.1)",
}


def _unknown_key(key: str, allowed: typing.Iterable[str], where: str) -> UserError:
    if f"{where}{key}" in RENAMED_KEYS:
        return UserError(RENAMED_KEYS[f"{where}{key}"])
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UserError(f"unknown config key '{where}{key}'{hint}")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"config key '{where}' must be a mapping, got {value!r}")
        return build_dataclass(hint, value, where + ".")
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(hint):
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise UserError(f"config key '{where}' must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, where) for v in value]
    if origin is dict or hint is Any:
        return value
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise UserError(f"config key '{where}' must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if hint is float:
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept what float() accepts.
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"config key '{where}' must be a number, got {value!r}") from None
    if hint is bool and not isinstance(value, bool):
        raise UserError(f"config key '{where}' must be true or false, got {value!r}")
    if hint is str and isinstance(value, bool):
        # YAML 1.1 reads `on` / `off` as booleans; in an auto | on | off setting they mean the words.
        return "on" if value else "off"
    if hint in (int, str) and (not isinstance(value, hint) or isinstance(value, bool)):
        raise UserError(f"config key '{where}' must be {hint.__name__}, got {value!r}")
    return value


def build_dataclass(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Instantiate `cls` from a mapping, rejecting unknown keys and wrongly typed values."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise _unknown_key(key, names, where)
        kwargs[key] = _coerce(value, hints[key], where + key)
    return cls(**kwargs)
