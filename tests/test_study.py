"""The study's vocabulary: ticket folders, the ticket order, settings round trips, defaults only from the schema."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import SCHEMA, UNIT_PARAMS, dataset_settings, merged, tcav_settings, unit_params
from ticketlens.config import study_params, validate_params
from ticketlens.study import (
    DatasetSettings,
    DataSettings,
    PruningSettings,
    TcavSettings,
    Ticket,
    TrainingSettings,
)


@pytest.mark.parametrize(
    "ticket",
    [
        Ticket("mnist", 0, "ticket", 0),
        Ticket("synthbirds", 12, "reinit", 3),
        Ticket("cub", 1, "randmask", 10),
    ],
)
def test_ticket_folder_round_trip(ticket: Ticket) -> None:
    assert Ticket.from_folder(ticket.folder) == ticket
    assert Ticket.from_folder(f"/anywhere/{ticket.folder.as_posix()}/") == ticket  # absolute, trailing slash
    assert (
        ticket.folder.as_posix()
        == f"results/{ticket.dataset}/seed_{ticket.seed}/{ticket.branch}/round_{ticket.round}"
    )


@pytest.mark.parametrize(
    "folder",
    [
        "results/mnist",
        "results/mnist/seed_0/ticket",
        "results/mnist/seed_0/pruned/round_1",  # not a branch
        "results/mnist/seed_x/ticket/round_1",
        "results/mnist/seed_0/ticket/round_1/tcav",
    ],
)
def test_a_non_ticket_folder_is_refused(folder: str) -> None:
    with pytest.raises(ValueError, match="is not a ticket folder"):
        Ticket.from_folder(Path(folder))


def test_tickets_come_in_seed_branch_round_order_and_controls_start_at_round_1() -> None:
    # controls listed in the other order on purpose: branches always go ticket, reinit, randmask
    study = dataclasses.replace(unit_params().study, seeds=(3, 1), rounds=2, controls=("randmask", "reinit"))
    expected = [
        (seed, branch, r)
        for seed in (3, 1)
        for branch, rounds in (("ticket", (0, 1, 2)), ("reinit", (1, 2)), ("randmask", (1, 2)))
        for r in rounds
    ]
    assert [(t.seed, t.branch, t.round) for t in study.tickets("mnist")] == expected
    assert {t.dataset for t in study.tickets("mnist")} == {"mnist"}
    only_mask = dataclasses.replace(study, seeds=(0,), controls=("randmask",))
    assert [(t.branch, t.round) for t in only_mask.tickets("cub")] == [
        ("ticket", 0), ("ticket", 1), ("ticket", 2), ("randmask", 1), ("randmask", 2),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "settings",
    [
        dataset_settings("mnist", concepts=["stroke_loop"], train_size=30),  # no concept_options
        dataset_settings("synthbirds", concepts=["texture_dotted"], concept_options={"images": "part_crops"}),
        dataset_settings("cub", model_width=0.5),
    ],
    ids=["mnist", "synthbirds", "cub"],
)
def test_dataset_settings_json_round_trip(settings: DatasetSettings) -> None:
    assert DatasetSettings.from_json(settings.to_json()) == settings
    assert DataSettings.from_json(settings.data.to_json()) == settings.data
    assert TrainingSettings.from_json(settings.training.to_json()) == settings.training
    assert json.loads(settings.to_json()) == json.loads(
        DatasetSettings.from_json(settings.to_json()).to_json()
    )


def test_section_settings_json_round_trip() -> None:
    for tcav in (tcav_settings(), tcav_settings(layers=["features.conv1", "features.conv2"])):
        assert TcavSettings.from_json(tcav.to_json()) == tcav
    pruning = unit_params(pruning={"exclude": ["features.conv1"]}).pruning
    assert PruningSettings.from_json(pruning.to_json()) == pruning
    assert pruning.exclude == ("features.conv1",)  # lists become tuples: settings are hashable


# ------------------------------------------------------------ every value comes from params (no defaults)

DATA_KEYS = {field.name for field in dataclasses.fields(DataSettings)}
CONCEPTS = {"mnist": ["stroke_loop"], "synthbirds": ["texture_dotted"], "cub": ["texture_dotted"]}


def _resolve(node: dict, schema: dict) -> dict:
    ref = node.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[-1]] if ref else node


def _leaves(node: dict, schema: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """(params path, property schema) of every leaf key of the schema, through `$ref`s."""
    for key, sub in _resolve(node, schema).get("properties", {}).items():
        if "properties" in _resolve(sub, schema):
            yield from _leaves(sub, schema, (*path, key))
        else:
            yield (*path, key), sub


def _at(params: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        params = params[key]
    return params


def _changed(path: tuple[str, ...], value: Any, sub: dict, schema: dict) -> Any:
    """A valid value other than `value`."""
    target = _resolve(sub, schema)
    if "enum" in target:
        return next(option for option in target["enum"] if option != value)
    if isinstance(value, bool):
        return not value
    if value is None:
        kind = next(t for t in target["type"] if t != "null")
        return {"string": "features.conv1", "array": ["features.conv1"], "integer": 7, "boolean": True}[kind]
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if path[-1] == "device":
        return "cpu" if value != "cpu" else "cuda:1"
    if path[-1] == "target_classes":  # all | a count | names: a count is valid for every dataset
        return 3 if value == "all" else "all"
    if isinstance(value, str):
        return value + "_changed"
    if path[-1] == "concepts":
        return CONCEPTS[path[1]]
    items = target.get("items", {})
    if items.get("type") == "integer":
        return [v + 1 for v in value]
    return items["enum"][:1] if "enum" in items else ["features.conv1"]


def _settings_value(params: dict, path: tuple[str, ...]) -> Any:
    if path[0] == "datasets" and path[2] in DATA_KEYS:  # gathered in DatasetSettings.data
        path = (*path[:2], "data", *path[2:])
    for key in path:
        params = params[key]
    return params


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples as lists, as in the schema


@pytest.mark.parametrize("name", ["mnist", "synthbirds", "cub"])
def test_every_setting_comes_from_params(name: str) -> None:
    """The typed settings have no defaults of their own (nor has the schema): change every key of the
    params and every setting follows."""
    schema = yaml.safe_load(SCHEMA.read_text())
    leaves = [
        (path, sub) for path, sub in _leaves(schema, schema) if path[0] != "datasets" or path[1] == name
    ]
    leaves = [(path, sub) for path, sub in leaves if path not in {("study", "datasets")}]
    assert len(leaves) >= 30 and any(path[:2] == ("datasets", name) for path, _ in leaves)
    base = merged(UNIT_PARAMS, {"study": {"datasets": [name]}})
    expected = {path: _plain(_at(base, path)) for path, _ in leaves}
    changed = merged(base, {})
    for path, sub in leaves:
        *parents, last = path
        _at(changed, tuple(parents))[last] = _changed(path, expected[path], sub, schema)
    if changed["study"]["max_jobs"] < 1000:
        changed["study"]["max_jobs"] = 50_001
    changed["pruning"]["rewind_iteration"] = 1  # below every changed iteration count
    section = changed["datasets"][name]
    if section["training"]["model_init"] == "imagenet":  # ImageNet weights need a ResNet and init: default
        section["model"], section["training"]["init"] = "resnet50", "default"
        special = {("datasets", name, "training", "init")}
    else:
        special = set()
    built = _plain(study_params(validate_params(base, SCHEMA)).to_dict())
    rebuilt = _plain(study_params(validate_params(changed, SCHEMA)).to_dict())
    for path in expected:
        assert _settings_value(built, path) == expected[path], path
        if path != ("pruning", "rewind_iteration") and path not in special:
            assert _settings_value(rebuilt, path) == _plain(_at(changed, path)) != expected[path], path
