"""Load and validate params.yaml against the JSON schema, with one-line errors that name the key."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ticketlens.data.concept_names import check_concept_names
from ticketlens.errors import UserError
from ticketlens.lottery.feature_maps import coarse_gradcam_problem
from ticketlens.study import StudyParams


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
    if kind in {"pattern", "maxLength", "minLength"} and "description" in schema:
        return "allowed: " + " ".join(str(schema["description"]).split())
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


_Validator = jsonschema.Draft202012Validator


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
    """Validate (every key is required: params.yaml is complete, the schema holds no defaults) and run the
    cross-key checks; return a copy; raise ConfigError on the first problem.

    Command-line strings are read first (`_read_command_line_strings`), then non-finite numbers are
    refused: JSON schema bounds let nan through (every comparison with nan is false) and inf through every
    lower bound, and a nested `--config` value arrives as the string '.nan'.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    checked = copy.deepcopy(dict(params))
    _read_command_line_strings(checked, schema)
    bad = next(_non_finite(checked), None)
    if bad is not None:
        raise ConfigError(f"{source}: key '{_key_path(bad[0])}': got {bad[1]} (allowed: a finite number)")
    errors = sorted(
        _Validator(schema).iter_errors(checked),
        key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))),
    )
    if errors:
        raise ConfigError(format_error(errors[0], source))
    _check_cross_keys(checked, source)
    return checked


def _read_command_line_strings(params: dict, schema: Mapping[str, Any]) -> None:
    """Snakemake passes nested `--config` values as strings (`study='{seeds: [0, 1]}'` gives ['0', '1'],
    `explanations='{gradcam_layer: null}'` gives 'null'): read a string as YAML wherever the schema asks
    for another type and the YAML value fits, and as null where the schema allows null and the string is
    YAML's null (no layer or path is called `null` or `~`)."""
    checker = _Validator(schema).TYPE_CHECKER

    def fits(value: Any, types: list[str]) -> bool:
        return any(checker.is_type(value, kind) for kind in types)

    def read(value: Any, node: Mapping[str, Any] | None) -> Any:
        node = _resolved(schema, node)
        if node is None:
            return value
        if isinstance(value, str) and "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            if parsed is None and "null" in types:
                return None
            if "string" in types or isinstance(parsed, str) or not fits(parsed, types):
                return value
            value = parsed
        if isinstance(value, dict):
            properties = node.get("properties", {})
            for key in list(value):
                value[key] = read(value[key], properties.get(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                value[index] = read(item, node.get("items"))
        return value

    for key in list(params):
        params[key] = read(params[key], schema.get("properties", {}).get(key))


def _resolved(schema: Mapping[str, Any], node: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A schema node with its `$ref` (to `#/$defs/...`) followed."""
    while isinstance(node, Mapping) and "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node if isinstance(node, Mapping) else None


def merge_params(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """`overrides` merged into `params` key by key (lists and values replace), as Snakemake merges a
    `--configfile` into params.yaml: a preset or a test config over the complete params."""
    out = copy.deepcopy(dict(params))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_params(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def study_params(params: Mapping[str, Any]) -> StudyParams:
    """The typed settings of validated params (see `ticketlens.study`)."""
    return StudyParams.from_dict(dict(params))


MNIST_IMAGE_SIZE = 28  # MNIST has no image_size key: its images are 28 x 28


def _check_cross_keys(params: dict, source: str) -> None:
    configured = params["datasets"]
    for name in params["study"]["datasets"]:
        if name not in configured:
            raise ConfigError(
                f"{source}: key 'study.datasets' lists '{name}' but 'datasets.{name}' is missing "
                f"(configured: {', '.join(sorted(configured)) or 'none'})"
            )
        try:
            check_concept_names(name, configured[name]["concepts"])
        except UserError as err:
            raise ConfigError(f"{source}: key 'datasets.{name}.concepts': {err}") from None
        image_size = configured[name].get("image_size", MNIST_IMAGE_SIZE)
        problem = coarse_gradcam_problem(
            configured[name]["model"], params["explanations"]["gradcam_layer"], int(image_size)
        )
        if problem:
            raise ConfigError(f"{source}: datasets.{name}: {problem}")
    jobs, limit = study_params(params).job_count(), params["study"]["max_jobs"]
    if jobs > limit:
        raise ConfigError(
            f"{source}: the study expands to {jobs} jobs, more than study.max_jobs = {limit} "
            "(fewer seeds, rounds or concepts, or raise study.max_jobs)"
        )
    tcav = params["explanations"]["tcav"]
    if not tcav["n_counterparts"] < tcav["n_random_sets"]:
        raise ConfigError(
            f"{source}: key 'explanations.tcav.n_counterparts': got {tcav['n_counterparts']} (allowed: 1 <= K < "
            f"explanations.tcav.n_random_sets = {tcav['n_random_sets']}; the other random sets are the null's pool)"
        )
    rewind = params["pruning"]["rewind_iteration"]
    for name in params["study"]["datasets"]:
        iterations = configured[name]["training"]["iterations"]
        if rewind >= iterations:
            raise ConfigError(
                f"{source}: key 'pruning.rewind_iteration': got {rewind} "
                f"(allowed: 0 <= k < datasets.{name}.training.iterations = {iterations})"
            )
        _check_model_init(name, configured[name], source)
    _check_layer_names(params, source)


def _check_layer_names(params: dict, source: str) -> None:
    """Every layer that params name (Grad-CAM's, TCAV's, the ones pruning leaves alone) is a layer of each
    studied dataset's model: checked here, before Snakemake plans (and deletes) anything, not in the jobs."""
    explanations = params["explanations"]
    named = {
        "explanations.gradcam_layer": [explanations["gradcam_layer"]]
        if explanations["gradcam_layer"]
        else [],
        "explanations.tcav.layers": explanations["tcav"]["layers"] or [],
        "pruning.exclude": params["pruning"]["exclude"],
    }
    if not any(named.values()):
        return  # the models' own layers: nothing to check, and no torch import at start-up
    from ticketlens.lottery.models import layer_names  # lazy: torch (~2 s) only when params name a layer

    for dataset in params["study"]["datasets"]:
        model = params["datasets"][dataset]["model"]
        layers = layer_names(model)
        allowed = {
            "explanations.gradcam_layer": ("a layer of", ("null", *layers.spatial)),
            "explanations.tcav.layers": ("a layer of", layers.modules),
            "pruning.exclude": ("a prunable layer of", layers.prunable),
        }
        for key, names in named.items():
            what, choices = allowed[key]
            for index, layer in enumerate(names):
                if layer not in choices:
                    where = key if key == "explanations.gradcam_layer" else f"{key}[{index}]"
                    raise ConfigError(
                        f"{source}: key '{where}': got {layer!r}, not {what} {model} "
                        f"(datasets.{dataset}.model; allowed: {_listed(choices)})"
                    )


def _listed(names: tuple[str, ...], most: int = 16) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names)} in all)"


PRETRAINED_MODELS = (
    "resnet18",
    "resnet50",
)  # the models with ImageNet weights (pretrained.TORCHVISION_WEIGHTS)


def _check_model_init(name: str, section: Mapping[str, Any], source: str) -> None:
    training = section["training"]
    if training["model_init"] != "imagenet":
        return
    if section["model"] not in PRETRAINED_MODELS:
        raise ConfigError(
            f"{source}: key 'datasets.{name}.training.model_init': imagenet needs model "
            f"{' or '.join(PRETRAINED_MODELS)}, got {section['model']} (allowed for it: scratch)"
        )
    if training["init"] != "default":
        raise ConfigError(
            f"{source}: key 'datasets.{name}.training.init': got {training['init']} with model_init imagenet "
            "(allowed: default; the ImageNet weights replace the init)"
        )


def check_params(paths: list[str | Path], schema_path: str | Path) -> None:
    """`ticketlens check-params params.yaml [preset.yaml ...]`: validate params, each later file merged
    over the ones before key by key (as `snakemake --configfile` merges them), without running anything."""
    paths = list(paths) or ["params.yaml"]
    merged: dict = {}
    for path in paths:
        merged = merge_params(merged, read_params(path))
    validate_params(merged, schema_path, source=" + ".join(map(str, paths)))
    print(f"{' + '.join(map(str, paths))}: valid")


def load_params(path: str | Path, schema_path: str | Path) -> dict:
    """Read a params YAML file and validate it."""
    return validate_params(read_params(path), schema_path, source=str(path))


def read_params(path: str | Path) -> dict:
    """A params YAML file as a mapping, or one line naming the file and what is wrong with it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (a params file is YAML)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a params file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a mapping of params sections (got {type(raw).__name__})")
    return raw or {}
