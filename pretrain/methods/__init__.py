"""Pretraining methods, one small class each, registered by name (`sl`, `sl-mlp`, `look`)."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from pretrain.errors import UserError
from pretrain.methods.base import METHODS, Method, register_method
from pretrain.schema import build_dataclass

# Importing the modules registers the methods.
from pretrain.methods import look, sl, sl_mlp  # noqa: E402,F401  isort: skip

__all__ = ["METHODS", "Method", "register_method", "get_method", "resolve_method_params"]


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown method '{name}'{hint}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def resolve_method_params(section: dict[str, Any]) -> dict[str, Any]:
    """Fill the method section with its class's defaults, rejecting unknown keys."""
    if not isinstance(section, dict) or "name" not in section:
        raise UserError("config key 'method' must be a mapping with a 'name' (sl, sl-mlp or look)")
    values = dict(section)
    name = values.pop("name")
    params = build_dataclass(get_method(name).Params, values, where="method.")
    return {"name": name, **dataclasses.asdict(params)}
