"""The study's vocabulary: ticket folders, the ticket order, settings round trips, defaults only from the schema."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SCHEMA, dataset_settings, schema_params, tcav_settings
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
    study = dataclasses.replace(
        schema_params().study, seeds=(3, 1), rounds=2, controls=("randmask", "reinit")
    )
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
    pruning = schema_params(pruning={"exclude": ["features.conv1"]}).pruning
    assert PruningSettings.from_json(pruning.to_json()) == pruning
    assert pruning.exclude == ("features.conv1",)  # lists become tuples: settings are hashable


# ---------------------------------------------------------------- every default comes from the schema

DATA_KEYS = {field.name for field in dataclasses.fields(DataSettings)}
CONCEPTS = {"mnist": ["stroke_loop"], "synthbirds": ["texture_dotted"], "cub": ["texture_dotted"]}


def _resolve(node: dict, schema: dict) -> dict:
    ref = node.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[-1]] if ref else node


def _defaults(node: dict, schema: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """(params path, property schema) of every property with a `default`, through `$ref`s; sections whose
    default is {} only make the section optional, so their members are what is listed."""
    for key, sub in _resolve(node, schema).get("properties", {}).items():
        if "default" in sub and sub["default"] != {}:
            yield (*path, key), sub
        if "properties" in _resolve(sub, schema):
            yield from _defaults(sub, schema, (*path, key))


def _changed(path: tuple[str, ...], sub: dict, schema: dict) -> Any:
    """A valid value other than the default."""
    value, target = sub["default"], _resolve(sub, schema)
    if "enum" in target:
        return next(option for option in target["enum"] if option != value)
    if isinstance(value, bool):
        return not value
    if value is None:
        kind = next(t for t in target["type"] if t != "null")
        return {"string": "features.conv1", "array": ["features.conv1"], "integer": 7}[kind]
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, str):
        return value + "_changed"
    if path[-1] == "concepts":
        return CONCEPTS[path[1]]
    items = target.get("items", {})
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
def test_every_default_comes_from_the_schema(name: str, tmp_path: Path) -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    defaults = [
        (path, sub) for path, sub in _defaults(schema, schema) if path[0] != "datasets" or path[1] == name
    ]
    assert len(defaults) >= 25 and any(path[:2] == ("datasets", name) for path, _ in defaults)
    expected = {path: _plain(sub["default"]) for path, sub in defaults}
    changed = {path: _changed(path, sub, schema) for path, sub in defaults}
    for path, sub in defaults:  # shared $defs are changed once, for every dataset that uses them
        sub["default"] = changed[path]
    copy = tmp_path / "params.schema.yaml"
    copy.write_text(yaml.safe_dump(schema, sort_keys=False))

    built = _plain(schema_params(name).to_dict())
    rebuilt = _plain(schema_params(name, schema=copy).to_dict())
    for path in expected:
        assert changed[path] != expected[path], path
        assert _settings_value(built, path) == expected[path], path
        assert _settings_value(rebuilt, path) == _plain(changed[path]), path
