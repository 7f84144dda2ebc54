"""params.yaml validation: every bad value stops with one line naming the key and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ticketlens.cli import main
from ticketlens.config import ConfigError, load_params, study_params, validate_params

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/params.schema.yaml"
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def broken(path: str, value):
    params = copy.deepcopy(PARAMS)
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return params


def test_shipped_params_are_valid_and_defaults_are_filled():
    params = validate_params(PARAMS, SCHEMA)
    assert params["datasets"]["mnist"]["training"]["checkpoint_every"] == 200
    assert params["datasets"]["synthbirds"]["concept_options"]["min_certainty"] == 3


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "study.datasets",
            ["mnist", "imagenet"],
            r"key 'study.datasets\[1\]': got 'imagenet' \(allowed: 'mnist', 'synthbirds', 'cub'\)",
        ),
        ("datasets.mnist.model", "vgg99", r"key 'datasets.mnist.model': got 'vgg99' \(allowed: 'lenet300'"),
        ("pruning.rate_fc", 1.5, r"key 'pruning.rate_fc': got 1.5 \(allowed: a number in \(0, 1\)\)"),
        ("pruning.rate_conv", 0, r"key 'pruning.rate_conv': got 0 \(allowed: a number in \(0, 1\)\)"),
        ("study.rounds", -1, r"key 'study.rounds': got -1 \(allowed: a number >= 0\)"),
        (
            "study.rouns",
            3,
            r"unknown key 'study.rouns' \(allowed keys: controls, datasets, max_jobs, rounds, seeds, threads\)",
        ),
        ("study.seeds", KeyError, r"'seeds' is a required property"),
        (
            "datasets.mnist.concepts",
            ["stroke_zebra"],
            r"key 'datasets.mnist.concepts': unknown concept 'stroke_zebra'",
        ),
        ("pruning.rewind_iteration", 10_000, r"key 'pruning.rewind_iteration': got 10000"),
    ],
)
def test_invalid_values_name_the_key_and_what_is_allowed(path, value, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        validate_params(broken(path, value), SCHEMA)
    assert "\n" not in str(info.value)


def test_dataset_listed_but_not_configured():
    params = copy.deepcopy(PARAMS)
    del params["datasets"]["cub"]
    params["study"]["datasets"] = ["cub"]
    with pytest.raises(ConfigError, match=r"'datasets.cub' is missing"):
        validate_params(params, SCHEMA)


def test_a_study_larger_than_max_jobs_stops_before_the_dag():
    jobs = study_params(validate_params(PARAMS, SCHEMA)).job_count()
    assert validate_params(broken("study.max_jobs", jobs), SCHEMA)["study"]["max_jobs"] == jobs
    with pytest.raises(ConfigError, match=rf"expands to {jobs} jobs, more than study.max_jobs = {jobs - 1} "):
        validate_params(broken("study.max_jobs", jobs - 1), SCHEMA)


def test_check_params_command_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(broken("pruning.scope", "sideways")))
    assert main(["check-params", str(bad), "--schema", str(SCHEMA)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pruning.scope" in err and "'global', 'layerwise'" in err


def test_unreadable_yaml_is_a_config_error(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("study: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad, SCHEMA)
