"""params.yaml validation: every bad value stops with one line naming the key and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from helpers import merged
from ticketlens.cli import run
from ticketlens.config import ConfigError, load_params, study_params, validate_params
from ticketlens.data import DATASETS
from ticketlens.data.attribute_concepts import IMAGE_KINDS
from ticketlens.data.mnist import SOURCES
from ticketlens.explanations.cav import METHODS
from ticketlens.lottery.models import INITS, MODELS
from ticketlens.lottery.pruning import SCOPES
from ticketlens.lottery.training import EARLY_STOP, END
from ticketlens.study import CONTROLS

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


def test_shipped_params_are_valid_and_complete():
    assert validate_params(PARAMS, SCHEMA) == PARAMS  # nothing is filled in: params.yaml has every key
    assert set(PARAMS["datasets"]) == {"mnist", "synthbirds", "cub"}


def test_the_schema_holds_no_defaults():
    """Defaults live in params.yaml only (docs/architecture.md): the schema validates and documents."""

    def defaults(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "default":
                    yield path
                yield from defaults(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from defaults(value, f"{path}[{index}]")

    assert list(defaults(yaml.safe_load(SCHEMA.read_text()))) == []


@pytest.mark.parametrize(
    "path", ["study.max_jobs", "pruning.scope", "explanations.tcav.n_null_draws", "findings.alpha",
             "datasets.mnist.training.test_at", "datasets.synthbirds.concept_options.images"],
)  # fmt: skip
def test_a_missing_key_is_an_error_naming_it(path):
    with pytest.raises(ConfigError, match=rf"'{path.rsplit('.', 1)[-1]}' is a required property"):
        validate_params(broken(path, KeyError), SCHEMA)


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
        ("study.rounds", -1, r"key 'study.rounds': got -1 \(allowed: a number in \[0, 30\]\)"),
        (
            "study.rouns",
            3,
            r"unknown key 'study.rouns' \(allowed keys: controls, datasets, device, kernels, max_jobs, rounds, seeds, threads\)",
        ),
        ("study.seeds", KeyError, r"'seeds' is a required property"),
        (
            "datasets.mnist.concepts",
            ["stroke_zebra"],
            r"key 'datasets.mnist.concepts': unknown concept 'stroke_zebra'",
        ),
        ("pruning.rewind_iteration", 10_000, r"key 'pruning.rewind_iteration': got 10000"),
        (
            "explanations.tcav.n_counterparts",
            20,
            r"key 'explanations.tcav.n_counterparts': got 20 \(allowed: 1 <= K <",
        ),
        (
            "explanations.tcav.classifier",
            "svm",
            r"key 'explanations.tcav.classifier': got 'svm' \(allowed: 'fastcav'",
        ),
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
    assert run(["check-params", str(bad), "--schema", str(SCHEMA)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pruning.scope" in err and "'global', 'layerwise'" in err


def test_unreadable_yaml_is_a_config_error(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("study: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad, SCHEMA)


@pytest.mark.parametrize(
    ("path", "value", "shown"),
    [
        ("datasets.mnist.training.lr", float("nan"), "nan"),  # passes exclusiveMinimum: nan <= 0 is False
        ("datasets.mnist.training.lr", float("inf"), "inf"),
        ("pruning.rate_fc", float("nan"), "nan"),
        ("datasets.synthbirds.training.weight_decay", float("inf"), "inf"),
    ],
)
def test_non_finite_numbers_are_refused(path, value, shown):
    with pytest.raises(ConfigError) as info:
        validate_params(broken(path, value), SCHEMA)
    assert str(info.value) == f"params.yaml: key '{path}': got {shown} (allowed: a finite number)"


def test_non_finite_number_in_yaml_stops_check_params(tmp_path, capsys):
    text = yaml.safe_dump(PARAMS).replace("lr: 0.002", "lr: .nan", 1)
    assert "lr: .nan" in text
    bad = tmp_path / "params.yaml"
    bad.write_text(text)
    assert run(["check-params", str(bad), "--schema", str(SCHEMA)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.endswith("got nan (allowed: a finite number)")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("study.rounds", 31, "key 'study.rounds': got 31 (allowed: a number in [0, 30])"),
        ("study.seeds", list(range(101)), "key 'study.seeds': got 101 items (allowed: at most 100 items)"),
        (
            "datasets.mnist.training.iterations",
            10_000_001,
            "key 'datasets.mnist.training.iterations': got 10000001 (allowed: a number in [1, 10000000])",
        ),
        (
            "explanations.tcav.n_random_sets",
            1001,
            "key 'explanations.tcav.n_random_sets': got 1001 (allowed: a number in [2, 1000])",
        ),
    ],
)
def test_upper_bounds(path, value, expected):
    with pytest.raises(ConfigError) as info:
        validate_params(broken(path, value), SCHEMA)
    assert str(info.value) == f"params.yaml: {expected}"


@pytest.mark.parametrize(
    "name",
    [
        'has_wing_color::blue"; rm -rf ~; "',  # quotes
        "has_wing_color::$(touch pwned)",  # command substitution
        "has_wing_color::../../etc/passwd",  # path traversal
        "has_wing_color::blue::red",  # a second ::
        "has wing color::blue",  # spaces
        "random_0",  # the name of a random set
        "Stroke_Loop",
    ],
)
def test_unsafe_concept_names_are_refused_by_check_params(tmp_path, capsys, name):
    params = broken("datasets.synthbirds.concepts", ["texture_dotted", name])
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    assert run(["check-params", str(bad), "--schema", str(SCHEMA)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"key 'datasets.synthbirds.concepts[1]': got {name!r} (allowed: a procedural concept" in err
    assert "has_<part>_<attribute>::<value>" in err


@pytest.mark.parametrize(
    "name", ["has_wing_color::blue", "has_size::small_(5_-_9_in)", "has_shape::duck-like"]
)
def test_cub_attribute_names_pass(name):
    validate_params(broken("datasets.synthbirds.concepts", [name]), SCHEMA)


def test_check_params_on_a_folder_or_a_binary_file_is_one_line(tmp_path, capsys):
    binary = tmp_path / "params.yaml"
    binary.write_bytes(b"study: \xff\xfe\x00 binary")
    for path, expected in (
        (tmp_path, f"{tmp_path}: is a folder, not a params file"),
        (binary, f"{binary}: not a UTF-8 text file (a params file is YAML)"),
    ):
        assert run(["check-params", str(path), "--schema", str(SCHEMA)]) == 2
        assert capsys.readouterr().err.strip() == f"ticketlens check-params: error: {expected}"


def test_nested_command_line_overrides_are_read_as_yaml():
    """`snakemake --config study='{seeds: [0, 1, 2]}'` hands nested values over as strings."""
    params = broken("study.seeds", ["0", "1", "2"])
    params["study"]["rounds"] = "2"
    params["datasets"]["mnist"]["training"]["lr"] = "0.01"
    filled = validate_params(params, SCHEMA, source="params.yaml with command-line overrides")
    assert filled["study"]["seeds"] == [0, 1, 2] and filled["study"]["rounds"] == 2
    assert filled["datasets"]["mnist"]["training"]["lr"] == 0.01
    with pytest.raises(
        ConfigError
    ) as info:  # a string that is no number stays an error, blamed on the override
        validate_params(
            broken("study.rounds", "many"), SCHEMA, source="params.yaml with command-line overrides"
        )
    assert str(info.value).startswith(
        "params.yaml with command-line overrides: key 'study.rounds': got 'many'"
    )


def _enum(path: str) -> set:
    """The enum of a schema node given as a /-separated path (through `$ref`s and `items`)."""
    schema = yaml.safe_load(SCHEMA.read_text())
    node = schema
    for key in path.split("/"):
        node = node[key]
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return set(node["enum"])


@pytest.mark.parametrize(
    ("registry", "path"),
    [
        (DATASETS, "properties/study/properties/datasets/items"),
        (SCOPES, "properties/pruning/properties/scope"),
        (METHODS, "properties/explanations/properties/tcav/properties/classifier"),
        (MODELS, "$defs/model"),
        (INITS, "$defs/training/properties/init"),
        ((END, EARLY_STOP), "$defs/training/properties/test_at"),
        (SOURCES, "properties/datasets/properties/mnist/properties/source"),
        (IMAGE_KINDS, "$defs/concept_options/properties/images"),
        (CONTROLS, "properties/study/properties/controls/items"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_the_package_registries_equal_the_schema_enums(registry, path):
    assert set(registry) == _enum(path)


def test_the_configured_datasets_are_the_package_datasets():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert set(schema["properties"]["datasets"]["properties"]) == set(DATASETS) == set(PARAMS["datasets"])


@pytest.mark.parametrize(
    "preset", sorted((ROOT / "workflow" / "presets").glob("*.yaml")), ids=lambda p: p.name
)
def test_presets_are_valid_over_params_and_keep_a_null_pool(preset):
    """A preset is merged into params.yaml (`--configfile`); its TCAV null pool is no smaller than the
    default study's."""
    params = validate_params(merged(PARAMS, yaml.safe_load(preset.read_text())), SCHEMA)
    tcav, default = params["explanations"]["tcav"], PARAMS["explanations"]["tcav"]
    pool = tcav["n_random_sets"] - tcav["n_counterparts"]
    assert pool >= default["n_random_sets"] - default["n_counterparts"], f"{preset.name}: a pool of {pool}"


# ----------------------------------------------------- issue 22: what `--config` hands over, and bounds

COMMAND_LINE = "params.yaml with command-line overrides"


@pytest.mark.parametrize(
    "path",
    [
        "datasets.mnist.training.lr",
        "explanations.tcav.alpha",
        "pruning.rate_fc",
        "findings.accuracy_margin",
        "findings.consistency_margin",
    ],
)
def test_nan_in_a_nested_command_line_override_is_refused(path):
    """`--config datasets='{mnist: {training: {lr: .nan}}}'` hands '.nan' over as a string: it is read as
    YAML before the finiteness check, not after it."""
    with pytest.raises(ConfigError) as info:
        validate_params(broken(path, ".nan"), SCHEMA, source=COMMAND_LINE)
    assert str(info.value) == f"{COMMAND_LINE}: key '{path}': got nan (allowed: a finite number)"


def test_nullable_keys_on_the_command_line():
    """`--config datasets='{mnist: {train_size: 100}}'` (type [integer, null]) and
    `--config explanations='{gradcam_layer: null}'` (type [string, null])."""
    params = broken("datasets.mnist.train_size", "100")
    params["explanations"]["gradcam_layer"] = "null"
    params["explanations"]["tcav"]["layers"] = "~"
    params["datasets"]["mnist"]["training"]["channels_last"] = "true"
    checked = validate_params(params, SCHEMA, source=COMMAND_LINE)
    assert checked["datasets"]["mnist"]["train_size"] == 100
    assert checked["explanations"]["gradcam_layer"] is None
    assert checked["explanations"]["tcav"]["layers"] is None
    assert checked["datasets"]["mnist"]["training"]["channels_last"] is True
    with pytest.raises(ConfigError, match=r"key 'explanations.tcav.layers\[1\]': got 'null', not a layer"):
        validate_params(broken("explanations.tcav.layers", ["features.relu1", "null"]), SCHEMA)  # a name
    with pytest.raises(ConfigError, match=r"key 'datasets.mnist.train_size': got 'many'"):
        validate_params(broken("datasets.mnist.train_size", "many"), SCHEMA, source=COMMAND_LINE)


def test_set_size_has_the_minimum_the_tcav_held_out_split_honours():
    from ticketlens.explanations.cav import held_out_split

    schema = yaml.safe_load(SCHEMA.read_text())
    smallest = schema["properties"]["explanations"]["properties"]["tcav"]["properties"]["set_size"]["minimum"]
    held_out_split([0, 1], smallest, smallest)  # the smallest allowed set holds out a train and a test row
    with pytest.raises(ValueError, match="cannot hold out"):
        held_out_split([0, 1], smallest - 1, smallest - 1)
    with pytest.raises(ConfigError, match=rf"key 'explanations.tcav.set_size': got {smallest - 1} \(allowed"):
        validate_params(broken("explanations.tcav.set_size", smallest - 1), SCHEMA)


@pytest.mark.parametrize("seed", [2**32, 2**64, 10**30])
def test_seeds_have_an_upper_bound(seed):
    with pytest.raises(ConfigError) as info:
        validate_params(broken("study.seeds", [0, seed]), SCHEMA)
    assert str(info.value).startswith(
        f"params.yaml: key 'study.seeds[1]': got {seed} (allowed: a number in [0, "
    )
    assert validate_params(broken("study.seeds", [2**32 - 1]), SCHEMA)["study"]["seeds"] == [2**32 - 1]


# ----------------------------------------------------- issue 22 item 11: layer names against the models


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "explanations.gradcam_layer",
            "features.conv99",
            "key 'explanations.gradcam_layer': got 'features.conv99', not a layer of convnet_mnist "
            "(datasets.mnist.model; allowed: null, features.conv1, ",
        ),
        (
            "explanations.tcav.layers",
            ["features.relu1", "classifier.fc9"],
            "key 'explanations.tcav.layers[1]': got 'classifier.fc9', not a layer of convnet_mnist "
            "(datasets.mnist.model; allowed: ",
        ),
        (
            "pruning.exclude",
            ["features.relu1"],
            "key 'pruning.exclude[0]': got 'features.relu1', not a prunable layer of convnet_mnist "
            "(datasets.mnist.model; allowed: features.conv1, features.conv2, classifier.fc1, classifier.out)",
        ),
        (
            "pruning.exclude",
            ["features.conv4"],  # conv4 (synthbirds) has it, convnet_mnist (mnist) does not
            "key 'pruning.exclude[0]': got 'features.conv4', not a prunable layer of convnet_mnist",
        ),
    ],
)
def test_layer_names_are_checked_against_each_model(path, value, expected):
    """Issue 22 item 11: a layer name that the model lacks stops check-params and the Snakefile's start-up,
    before Snakemake deletes any output, instead of failing the jobs at run time."""
    with pytest.raises(ConfigError) as info:
        validate_params(broken(path, value), SCHEMA)
    assert str(info.value).startswith(f"params.yaml: {expected}"), str(info.value)


def test_layer_names_the_models_have_pass():
    params = broken("explanations.gradcam_layer", "features.relu2")
    params["explanations"]["tcav"]["layers"] = ["features.relu2", "classifier.relu1"]
    params["pruning"]["exclude"] = ["classifier.out"]
    assert validate_params(params, SCHEMA)["pruning"]["exclude"] == ["classifier.out"]


def test_lenet300_has_no_grad_cam_layer():
    params = broken("datasets.mnist.model", "lenet300")
    params["explanations"]["gradcam_layer"] = "classifier.fc1"
    with pytest.raises(ConfigError, match=r"not a layer of lenet300 \(datasets.mnist.model; allowed: null\)"):
        validate_params(params, SCHEMA)
