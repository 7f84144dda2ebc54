"""Load and validate params.yaml against the JSON schema, with one-line errors that name the key."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ticketlens.errors import UserError


class ConfigError(UserError):
    """A params value is invalid; the message names the key and what is allowed."""


def _key_path(path: Any) -> str:
    parts: list[str] = []
    for item in path:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts) or "(top level)"


def _allowed(error: jsonschema.ValidationError) -> str:
    schema = error.schema
    kind = error.validator
    if kind == "enum":
        return "allowed: " + ", ".join(repr(v) for v in schema["enum"])
    if kind == "additionalProperties":
        return "allowed keys: " + ", ".join(sorted(schema.get("properties", {})))
    if kind in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        left = "[" if "minimum" in schema else "("
        right = "]" if "maximum" in schema else ")"
        if high is None:
            return f"allowed: a number >= {low}" if left == "[" else f"allowed: a number > {low}"
        return f"allowed: a number in {left}{low}, {high}{right}"
    if kind == "type":
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return "allowed type: " + " or ".join(types)
    if kind == "required":
        return "required keys: " + ", ".join(schema["required"])
    if kind == "maxItems":
        return f"allowed: at most {schema['maxItems']} items"
    return ""


def format_error(error: jsonschema.ValidationError, source: str = "params.yaml") -> str:
    """One line: where, what was wrong, what is allowed."""
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed_keys = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - allowed_keys)
        prefix = f"{where}." if error.absolute_path else ""
        what = "unknown key " + ", ".join(f"'{prefix}{key}'" for key in unknown)
        return f"{source}: {what} ({_allowed(error)})"
    if error.validator == "required":
        return f"{source}: {where}: {error.message} ({_allowed(error)})"
    allowed = _allowed(error)
    detail = (
        f"got {len(error.instance)} items" if error.validator == "maxItems" else f"got {error.instance!r}"
    )
    return f"{source}: key '{where}': {detail}" + (f" ({allowed})" if allowed else f" ({error.message})")


def _iter_default_properties(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, sub in schema.get("properties", {}).items():
        if "$ref" in sub:
            ref = sub["$ref"].split("/")[-1]
            sub = {**root["$defs"][ref], **{k: v for k, v in sub.items() if k != "$ref"}}
        yield key, sub


def _fill_defaults(instance: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> None:
    """Set schema defaults for missing keys, recursing into nested objects."""
    if not isinstance(instance, dict):
        return
    for key, sub in _iter_default_properties(schema, root):
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        elif key not in instance and sub.get("type") == "object" and not sub.get("required"):
            instance[key] = {}  # an optional section: materialise it so its defaults apply
        if key in instance and sub.get("type") == "object":
            _fill_defaults(instance[key], sub, root)


def _non_finite(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], float]]:
    """(key path, value) of every nan or infinite float (YAML's .nan, .inf), depth first."""
    if isinstance(node, float) and not math.isfinite(node):
        yield path, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _non_finite(value, (*path, key))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _non_finite(value, (*path, index))


def validate_params(params: Mapping[str, Any], schema_path: str | Path, source: str = "params.yaml") -> dict:
    """Validate, fill defaults and run the cross-key checks; raise ConfigError on the first problem.

    Non-finite numbers are refused first: JSON schema bounds let nan through (every comparison with nan
    is false) and inf through every lower bound.
    """
    bad = next(_non_finite(params), None)
    if bad is not None:
        raise ConfigError(f"{source}: key '{_key_path(bad[0])}': got {bad[1]} (allowed: a finite number)")
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(
        validator.iter_errors(params), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if errors:
        raise ConfigError(format_error(errors[0], source))
    filled = copy.deepcopy(dict(params))
    _fill_defaults(filled, schema, schema)
    _check_cross_keys(filled, source)
    return filled


def _check_cross_keys(params: dict, source: str) -> None:
    from ticketlens.data.concepts import check_concept_names  # light import: no torch needed

    configured = params["datasets"]
    for name in params["study"]["datasets"]:
        if name not in configured:
            raise ConfigError(
                f"{source}: key 'study.datasets' lists '{name}' but 'datasets.{name}' is missing "
                f"(configured: {', '.join(sorted(configured)) or 'none'})"
            )
        try:
            check_concept_names(name, configured[name].get("concepts", []))
        except UserError as err:
            raise ConfigError(f"{source}: key 'datasets.{name}.concepts': {err}") from None
    rewind = params["pruning"]["rewind_iteration"]
    for name in params["study"]["datasets"]:
        iterations = configured[name]["training"]["iterations"]
        if rewind >= iterations:
            raise ConfigError(
                f"{source}: key 'pruning.rewind_iteration': got {rewind} "
                f"(allowed: 0 <= k < datasets.{name}.training.iterations = {iterations})"
            )


def load_params(path: str | Path, schema_path: str | Path) -> dict:
    """Read a params YAML file and validate it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return validate_params(raw or {}, schema_path, source=str(path))
