"""The GPU presets validate merged over params.yaml (as `snakemake --configfile` merges them), and the
cross-key rules of ImageNet initialisation refuse what cannot work, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import SCHEMA, unit_params
from ticketlens.config import ConfigError, check_params, merge_params, validate_params

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["workflow/presets/cub.yaml", "workflow/presets/ghosh2023.yaml", "workflow/presets/full.yaml"]


@pytest.mark.parametrize("preset", PRESETS)
def test_check_params_accepts_each_preset_merged_over_params_yaml(preset, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    check_params(["params.yaml", preset], SCHEMA)
    assert capsys.readouterr().out.strip() == f"params.yaml + {preset}: valid"


def test_the_cub_presets_ask_for_what_their_headers_say():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for preset, model, size in (("cub", "resnet18", 224), ("ghosh2023", "resnet50", 448)):
        merged = merge_params(base, yaml.safe_load((ROOT / f"workflow/presets/{preset}.yaml").read_text()))
        params = validate_params(merged, SCHEMA)
        cub = params["datasets"]["cub"]
        assert params["study"]["datasets"] == ["cub"] and len(params["study"]["seeds"]) >= 3
        assert (cub["model"], cub["image_size"], cub["training"]["model_init"]) == (model, size, "imagenet")
        assert cub["training"]["augment"] == "crop_flip" and cub["training"]["precision"] == "bf16"
        assert "GPU-hours" in (ROOT / f"workflow/presets/{preset}.yaml").read_text().split("study:")[0]


def test_merge_replaces_lists_and_merges_sections():
    merged = merge_params({"study": {"seeds": [0, 1], "rounds": 3}}, {"study": {"seeds": [5]}})
    assert merged == {"study": {"seeds": [5], "rounds": 3}}


def test_a_bad_preset_key_names_the_merged_files(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad.yaml"
    bad.write_text("study:\n  device: tpu\n")
    with pytest.raises(ConfigError, match=r"params.yaml \+ .*bad.yaml: key 'study.device'"):
        check_params(["params.yaml", bad], SCHEMA)


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ({"model": "conv4", "training": {"model_init": "imagenet"}},
         r"key 'datasets.synthbirds.training.model_init': imagenet needs model resnet18 or resnet50, got conv4"),
        ({"model": "resnet18", "training": {"model_init": "imagenet", "init": "glorot_normal"}},
         r"key 'datasets.synthbirds.training.init': got glorot_normal with model_init imagenet"),
    ],
)  # fmt: skip
def test_imagenet_init_is_refused_where_it_cannot_work(dataset, expected):
    from helpers import REQUIRED_TRAINING

    section = {**dataset, "training": {**REQUIRED_TRAINING, **dataset["training"]}}
    with pytest.raises(ConfigError, match=expected):
        unit_params("synthbirds", dataset=section)


def test_the_gpu_profile_is_the_slurm_profile_with_one_gpu_per_job():
    cpu, gpu = (
        yaml.safe_load((ROOT / f"workflow/profiles/{p}/config.yaml").read_text())
        for p in ("slurm", "slurm_gpu")
    )
    assert {k: v for k, v in gpu.items() if k != "set-resources"} == {
        k: v for k, v in cpu.items() if k != "set-resources"
    }
    grouped = {
        rule: gpu["set-resources"][rule] for rule in ("explain_ticket", "tcav_calibration", "tcav_concept")
    }
    assert {(r["slurm_partition"], r["gres"]) for r in grouped.values()} == {("gpu", "gpu:1")}
    assert gpu["set-resources"]["train_ticket"]["gres"] == "gpu:1"


def test_the_new_registries_equal_the_schema_enums():
    from ticketlens.config import PRETRAINED_MODELS
    from ticketlens.device import PRECISIONS
    from ticketlens.lottery.augment import AUGMENTS
    from ticketlens.lottery.models import MODELS
    from ticketlens.lottery.pretrained import MODEL_INITS, TORCHVISION_WEIGHTS

    schema = yaml.safe_load(SCHEMA.read_text())["$defs"]
    training = schema["training"]["properties"]
    assert tuple(schema["model"]["enum"]) == MODELS
    assert tuple(training["augment"]["enum"]) == AUGMENTS
    assert tuple(training["precision"]["enum"]) == PRECISIONS
    assert tuple(training["model_init"]["enum"]) == MODEL_INITS
    assert tuple(TORCHVISION_WEIGHTS) == PRETRAINED_MODELS
