"""The tests' shared builders (fixtures live in conftest.py; no test file imports another).

* settings: `TOY`, `TOY_PRUNING` and `make_toy_data` (a tiny learnable dataset), and the typed settings of
  the unit tests' base params with the keys a test is about (`unit_params`, `dataset_settings`, ...);
* the tiny study (tests/configs/tiny.yaml over params.yaml) and a Snakemake runner;
* `make_results_tree`: a synthetic results/toy tree in the formats of docs/architecture.md;
* `explain_into`: explain_ticket with its three outputs in one folder.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from ticketlens.analysis.summary import summarize_dataset
from ticketlens.config import merge_params, study_params, validate_params
from ticketlens.data.prepared import PreparedData, channel_stats, save_prepared
from ticketlens.explanations.explain import explain_ticket
from ticketlens.study import (
    BRANCHES,
    DATASET_FILES,
    RESULTS,
    TICKET,
    TICKET_DIR,
    TICKET_FILES,
    DatasetSettings,
    DataSettings,
    FindingsSettings,
    PruningSettings,
    StudyParams,
    TcavSettings,
    Ticket,
    TrainingSettings,
    branch_rounds,
    concept_slug,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "params.schema.yaml"
CONFIGS = ROOT / "tests" / "configs"
BIN = Path(sys.executable).parent

# ------------------------------------------------------------------------------------------- settings

TOY = DatasetSettings(
    data=DataSettings(root="toy"),
    model="convnet_mnist",
    model_width=0.5,
    concepts=(),
    training=TrainingSettings(
        optimizer="adam",
        lr=0.003,
        momentum=0.9,
        weight_decay=0.0,
        batch_size=32,
        iterations=40,
        eval_every=20,
        checkpoint_every=20,
        init="default",
        test_at="end",
        model_init="scratch",
        weights_file=None,
        augment="none",
        precision="fp32",
        channels_last=None,
        lr_schedule="constant",
    ),
)
TOY_PRUNING = PruningSettings(
    scope="layerwise",
    rate_conv=0.2,
    rate_fc=0.4,
    rate_output=0.1,
    exclude=(),
    one_shot=False,
    rewind_iteration=0,
)

# The unit tests' base params: complete, small models, short training (tests/configs/unit.yaml).
UNIT_PARAMS = yaml.safe_load((CONFIGS / "unit.yaml").read_text())
REQUIRED_TRAINING = {"optimizer": "adam", "lr": 0.001, "batch_size": 8, "iterations": 10, "eval_every": 5}


merged = merge_params  # `overrides` into `base` key by key, as Snakemake merges a --configfile


def unit_params(
    name: str = "mnist",
    dataset: dict[str, Any] | None = None,
    pruning: dict[str, Any] | None = None,
    explanations: dict[str, Any] | None = None,
    schema: Path = SCHEMA,
) -> StudyParams:
    """Typed params of the unit tests' base with a one-dataset study and the keys given changed."""
    overrides = {
        "study": {"datasets": [name]},
        "pruning": pruning or {},
        "explanations": explanations or {},
        "datasets": {name: dataset or {}},
    }
    return study_params(validate_params(merged(UNIT_PARAMS, overrides), schema))


def dataset_settings(name: str, **section: Any) -> DatasetSettings:
    """`datasets.<name>` as typed settings: the keys given, the rest from the unit tests' base."""
    return unit_params(name, dataset=section).datasets[name]


def data_settings(name: str, **section: Any) -> DataSettings:
    return dataset_settings(name, **section).data


def training_settings(**section: Any) -> TrainingSettings:
    """A `training` section (with at least the schema's required keys), the rest from the unit tests' base."""
    return dataset_settings("mnist", training=section).training


def pruning_settings(**section: Any) -> PruningSettings:
    """The `pruning` section: the keys given, the rest from the unit tests' base."""
    iterations = int(section.get("rewind_iteration", 0)) + REQUIRED_TRAINING["iterations"]
    training = {**REQUIRED_TRAINING, "iterations": iterations}  # the schema asks rewind < iterations
    return unit_params(dataset={"training": training}, pruning=section).pruning


def tcav_settings(**section: Any) -> TcavSettings:
    """The `explanations.tcav` section: the keys given, the rest from the unit tests' base."""
    return unit_params(explanations={"tcav": section}).explanations.tcav


def make_toy_data(
    n: int = 400, classes: int = 4, size: int = 28, channels: int = 1, seed: int = 0
) -> PreparedData:
    """Noise images with a bright class-specific band: learnable in a few dozen steps."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = (torch.rand(n, channels, size, size, generator=generator) * 80).to(torch.uint8)
    band = size // classes
    for c in range(classes):
        images[labels == c, :, c * band : (c + 1) * band, :] = 230
    split = torch.zeros(n, dtype=torch.int8)
    split[int(0.7 * n) : int(0.8 * n)] = 1
    split[int(0.8 * n) :] = 2
    mean, std = channel_stats(images[split == 0])
    return PreparedData("toy", images, labels, split, [f"class{c}" for c in range(classes)], mean, std)


# ------------------------------------------------------------------------------------- the tiny study

DEFAULT_PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
TINY = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())  # the overrides of params.yaml
CUB_TINY = yaml.safe_load((CONFIGS / "cub_tiny.yaml").read_text())  # the tiny CUB-shaped study
TINY_MNIST = Path(TINY["datasets"]["mnist"]["root"])  # committed idx files (write_idx, gzip mtime 0)


def write_idx(folder: Path, n_train: int = 120, n_test: int = 30) -> None:
    """The four MNIST idx files with random digits (gzipped, as distributed)."""
    folder.mkdir(parents=True)
    rng = __import__("random").Random(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = bytes(rng.randrange(256) for _ in range(n * 28 * 28))
        labels = bytes(i % 10 for i in range(n))
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + pixels)
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels)


def snakemake(
    workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    command = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def make_study_dir(workdir: Path, config: dict[str, Any] | None = None) -> Path:
    """A working directory for the tiny study: params.yaml with tests/configs/tiny.yaml (or `config`)
    merged in, exactly what `snakemake --configfile tests/configs/tiny.yaml` runs, and the tiny idx files."""
    shutil.copytree(ROOT / TINY_MNIST, workdir / TINY_MNIST)
    write_params(workdir, TINY if config is None else config)
    return workdir


def write_params(workdir: Path, config: dict[str, Any]) -> None:
    """workdir/params.yaml: the repository's params.yaml with `config` merged in."""
    (workdir / "params.yaml").write_text(yaml.safe_dump(merged(DEFAULT_PARAMS, config)))


TIMING_FIELDS = {"train_seconds", "images_per_second"}  # the only fields two runs may differ in


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def assert_same_results(expected_root: Path, actual_root: Path) -> None:
    """Two runs of the tiny study wrote the same files with the same bytes, except timing fields."""
    expected = sorted(p.relative_to(expected_root) for p in expected_root.rglob("*") if p.is_file())
    actual = sorted(p.relative_to(actual_root) for p in actual_root.rglob("*") if p.is_file())
    assert actual == expected, f"only in one run: {sorted(set(expected) ^ set(actual))}"
    timed = 0
    for relative in expected:
        a, b = (expected_root / relative).read_bytes(), (actual_root / relative).read_bytes()
        if a == b:
            continue
        assert relative.name == "metrics.json", f"{relative} differs"
        expected_json, actual_json = json.loads(a), json.loads(b)
        assert expected_json.keys() >= TIMING_FIELDS, f"{relative} differs and has no timing fields"
        assert _without_timing(expected_json) == _without_timing(actual_json), f"{relative} differs"
        timed += 1
    assert any(p.suffix == ".pt" for p in expected) and any(p.suffix == ".npz" for p in expected)
    assert timed <= 8  # one metrics.json per ticket: 2 datasets x (dense, ticket, reinit, randmask)


# ---------------------------------------------------------------------------------- a results tree

LAYERS = ["features.3", "features.6"]
CLASSES = [0, 1, 2]
CONCEPTS = ["stripes", "has_wing_color::blue"]
METHODS = ["gradcam", "saliency"]
N_PROBE, SIZE, N_RANDOM, N_TEST = 6, 8, 5, 1000
SETTINGS = FindingsSettings(
    alpha=0.05,
    accuracy_margin=0.01,
    consistency_margin=0.0,
    concept_margin=0.05,
    permutations=199,
    margin_bins=5,
)
# Dense nets of different seeds share this map and add their own part: Spearman about 0.7 between seeds.
DENSE_BASE = np.random.default_rng(99).random((N_PROBE, SIZE, SIZE))
DENSE_OWN = 0.65
DIFFICULTY = np.random.default_rng(98).permutation(
    (np.arange(N_TEST) + 0.5) / N_TEST
)  # correct when below the accuracy


def ticket_accuracy(seed: int, branch: str, r: int) -> float:
    """Known answer: tickets hold dense accuracy to round 3 and drop at round 4; controls decay early."""
    noise = 0.002 * (seed - 1)
    if branch == "ticket":
        return 0.95 + noise - (0.10 if r >= 4 else 0.0) - (0.05 if r >= 5 else 0.0)
    return 0.93 - 0.04 * r + 2 * noise


def ticket_consistency(seed: int, branch: str, r: int) -> float:
    """Known answer: Grad-CAM/saliency agreement with dense is above the dense seed-to-seed ceiling (about
    0.7) to round 2 and below it from round 3, before accuracy fails at round 4."""
    level = {0: 1.0, 1: 0.8, 2: 0.8, 3: 0.6, 4: 0.45, 5: 0.3}[r]
    if branch != "ticket":
        level -= 0.2
    return level + 0.005 * seed


def tcav_score(concept: str, layer: str, target: int, branch: str, r: int) -> float:
    """Known answer: 'stripes' is important for class 0 in the dense net and loses it from round 3."""
    if concept == "stripes" and target == 0 and (branch == "ticket" and r < 3):
        return 0.9
    return 0.5


def image_outcomes(seed: int, branch: str, r: int) -> np.ndarray:
    """Per test image correct: the planted accuracy with a tiny per-ticket jitter, hard images shared."""
    jitter = np.random.default_rng([seed, BRANCHES.index(branch), r]).normal(0, 0.001)
    return ticket_accuracy(seed, branch, r) + jitter > DIFFICULTY


def ticket_maps(seed: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """Standard (non-negative) maps; the dense nets share DENSE_BASE, so the ceiling is known."""
    if r == 0:
        own = np.random.default_rng(1000 + seed).random(DENSE_BASE.shape)
        return (DENSE_BASE + DENSE_OWN * own).astype(np.float32)
    return rng.random((N_PROBE, SIZE, SIZE)).astype(np.float32)


def write_ticket(folder: Path, seed: int, branch: str, r: int, concepts: list[str]) -> None:
    rng = np.random.default_rng(1000 * seed + 10 * r + len(branch))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tcav").mkdir(exist_ok=True)
    remaining = 0.6**r
    correct = image_outcomes(seed, branch, r)
    metrics = {
        "dataset": "toy",
        "seed": seed,
        "branch": branch,
        "round": r,
        "test_accuracy": float(correct.mean()),
        "test_loss": 0.2 + 0.1 * r,
        "val_curve": [{"iteration": 50, "val_loss": 0.3, "val_accuracy": 0.9}],
        "early_stop_iteration": 400 - 50 * r,
        "early_stop_val_accuracy": 0.9,
        "remaining_fraction": remaining,
        "remaining_per_layer": {"features.0.weight": remaining},
        "iterations": 500,
        "train_seconds": 1.0,
        "images_per_second": 1000.0,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    labels = np.array([0, 0, 1, 1, 2, 2])
    rows = []
    for probe in range(N_PROBE):
        for method in METHODS:
            rows.append(
                {
                    "probe": 20 + probe,
                    "label": labels[probe],
                    "pred": labels[probe],
                    "correct": True,
                    "method": method,
                    # known answer: from round 4 the ticket's first two Grad-CAM maps are empty after the ReLU
                    "empty": method == "gradcam" and branch == "ticket" and r >= 4 and probe < 2,
                    "box_mass": 0.6,
                    "box_hit": 1.0,
                    "part_mass": 0.4 - 0.02 * r,
                    "part_hit": 1.0,
                    "deletion_auc": 0.2 + 0.01 * r,
                    "insertion_auc": 0.7 - 0.02 * r,
                }
            )
    pd.DataFrame(rows).to_csv(folder / "saliency.csv", index=False)
    cons = []
    references = ["random"] if r == 0 else ["dense", "previous", "random"]
    for probe in range(N_PROBE):
        for method in METHODS:
            for reference in references:
                base = 0.05 if reference == "random" else ticket_consistency(seed, branch, r)
                value = base + rng.normal(0, 0.01)
                cons.append(
                    {
                        "probe": 20 + probe,
                        "method": method,
                        "reference": reference,
                        "spearman": value,
                        "iou_top10": value / 2,
                        "iou_top20": value / 1.5,
                        "ssim": value * 0.9,
                    }
                )
    pd.DataFrame(cons).to_csv(folder / "consistency.csv", index=False)
    maps = ticket_maps(seed, r, rng)
    np.savez(
        folder / "saliency.npz",
        gradcam=maps,
        gradcam_signed=maps - 0.3,
        saliency=maps * 1e-3,
        probe=np.arange(20, 20 + N_PROBE, dtype=np.int64),
        labels=labels.astype(np.int64),
        preds=labels.astype(np.int64),
        logits=rng.random((N_PROBE, 3)).astype(np.float32),
        test_indices=np.arange(N_TEST, dtype=np.int64),
        test_correct=correct,
    )

    jitter = float(
        np.random.default_rng([seed, r, 7]).normal(0, 0.003)
    )  # per ticket: paired differences spread

    def tcav_rows(concept: str, score: Any) -> list[dict[str, Any]]:
        """Rows of the TCAV test (tcav_stats.TEST_COLUMNS): significant and up where the score is high."""
        return [
            {
                "concept": concept, "layer": layer, "target_class": target, "mean": score(layer, target),
                "cosine": score(layer, target) - 0.5 + jitter, "null_cosine": 0.0, "null_mean": 0.5,
                "effect": score(layer, target) - 0.5 + jitter,
                "effect_low": -0.3, "effect_high": 0.3, "p_value": 0.001 if score(layer, target) > 0.8 else 0.6,
                "side": 1, "cav_accuracy": 0.85, "null_accuracy": 0.5, "p_learnable": 0.001, "n_null": 999,
                "n_counterparts": 5, "classifier": "fastcav",
            }
            for layer in LAYERS
            for target in CLASSES
        ]  # fmt: skip

    write_image_tables(folder, correct, branch, r, rng)
    calibration = [row for i in range(N_RANDOM) for row in tcav_rows(f"random_{i}", lambda *_: 0.5)]
    pd.DataFrame(calibration).to_csv(folder / "tcav" / "calibration.csv", index=False)
    for concept in concepts:
        rows = tcav_rows(concept, lambda layer, target, c=concept: tcav_score(c, layer, target, branch, r))
        pd.DataFrame(rows).to_csv(folder / "tcav" / f"{concept_slug(concept)}.csv", index=False)


N_EXPLAINED = 30  # the toy study's explained subset: images 0-29 (data.pt has 30, for the forgetting gallery)


def write_image_tables(
    folder: Path, correct: np.ndarray, branch: str, r: int, rng: np.random.Generator
) -> None:
    """outcomes.csv (every toy test image; class = image mod 3) and, on the ticket branch, agreement.csv of
    the explained subset (agreement falls with the round, no per-image link planted)."""
    image = np.arange(N_TEST, dtype=np.int64)
    label = image % 3
    margin = np.where(correct, 1.0, -1.0) * (0.5 + (1 - DIFFICULTY))
    outcomes = {"image": image, "label": label, "correct": correct,
                "predicted": np.where(correct, label, (label + 1) % 3), "loss": np.log1p(np.exp(-margin)),
                "margin": margin}  # fmt: skip
    pd.DataFrame(outcomes).to_csv(folder / TICKET_FILES.outcomes, index=False)
    if branch != TICKET:
        return
    rows = []
    for method in METHODS:
        rho = (
            np.ones(N_EXPLAINED)
            if r == 0
            else np.clip(1.0 - 0.1 * r + rng.normal(0, 0.1, N_EXPLAINED), -1, 1)
        )
        rows.append(pd.DataFrame({"image": image[:N_EXPLAINED], "label": label[:N_EXPLAINED], "method": method,
                                  "spearman": rho, "iou_top10": rho / 2, "iou_top20": rho / 1.5, "ssim": rho}))  # fmt: skip
    pd.concat(rows).to_csv(folder / TICKET_FILES.agreement, index=False)
    maps = rng.random((N_EXPLAINED, SIZE, SIZE)).astype(np.float32)
    np.savez(folder / TICKET_FILES.image_maps, images=image[:N_EXPLAINED], labels=label[:N_EXPLAINED],
             gradcam=maps, saliency=maps * 1e-3)  # fmt: skip


def write_prepared(results: Path) -> None:
    n = 30
    generator = torch.Generator().manual_seed(0)
    data = PreparedData(
        name="toy",
        images=torch.randint(0, 256, (n, 1, SIZE, SIZE), dtype=torch.uint8, generator=generator),
        labels=torch.arange(n, dtype=torch.int64) % 3,
        split=torch.tensor([0] * 15 + [1] * 5 + [2] * 10, dtype=torch.int8),
        class_names=["alpha", "beta", "gamma"],
        mean=[0.5],
        std=[0.25],
    )
    save_prepared(data, results / "prepared" / "data.pt")


@dataclass(frozen=True)
class ToyStudy:
    """A synthetic results/toy tree: its folder, its ticket folders (seed, branch, round order) and concepts."""

    results: Path
    tickets: list[Path]
    concepts: list[str]

    def output(self, name: str) -> Path:
        """A per-dataset output (`study.DATASET_FILES`) under this tree's results folder."""
        return self.results / DATASET_FILES[name]

    def ticket_files(self) -> dict[str, list[Path]]:
        """summarize_dataset's per-ticket file lists, as the rule passes them."""
        return {
            "ticket_metrics": [t / TICKET_FILES.metrics for t in self.tickets],
            "saliency_tables": [t / TICKET_FILES.saliency_table for t in self.tickets],
            "consistency_tables": [t / TICKET_FILES.consistency for t in self.tickets],
            "saliency_maps": [t / TICKET_FILES.saliency_maps for t in self.tickets],
            "calibration_tables": [t / TICKET_FILES.tcav_calibration for t in self.tickets],
            "outcome_tables": [
                t / TICKET_FILES.outcomes for t in self.tickets if Ticket.from_folder(t).branch == TICKET
            ],
            "agreement_tables": [
                t / TICKET_FILES.agreement for t in self.tickets if Ticket.from_folder(t).branch == TICKET
            ],
        }

    def tcav_table_pattern(self) -> str:
        """Rule tcav_concept's output pattern, under this tree's root."""
        root = self.results.parent.parent
        return str(root / RESULTS / TICKET_DIR / TICKET_FILES.tcav_concept)

    def summarize(self, alpha: float = 0.05, settings: FindingsSettings = SETTINGS) -> dict[str, Any]:
        return summarize_dataset(
            "toy",
            **self.ticket_files(),
            concepts=self.concepts,
            tcav_table_pattern=self.tcav_table_pattern(),
            alpha=alpha,
            settings=settings,
            summary=self.output("summary"),
            aggregate=self.output("summary_agg"),
            tcav_summary=self.output("tcav_summary"),
            findings=self.output("findings"),
            metrics=self.output("metrics"),
        )

    def summarize_args(self, settings: FindingsSettings = SETTINGS) -> list[str]:
        """`ticketlens summarize-dataset ...` as the rule calls it."""
        files = self.ticket_files()
        flags = {"ticket_metrics": "--metrics"}
        args = ["summarize-dataset", "--dataset", "toy"]
        for key, paths in files.items():
            args += [flags.get(key, "--" + key.replace("_", "-")), *map(str, paths)]
        args += ["--concepts", *self.concepts, "--tcav-table-pattern", self.tcav_table_pattern()]
        args += ["--alpha", "0.05", "--settings", settings.to_json()]
        for flag, name in (("--summary", "summary"), ("--aggregate", "summary_agg"), ("--tcav-summary", "tcav_summary"),
                           ("--findings", "findings"), ("--metrics-out", "metrics")):  # fmt: skip
            args += [flag, str(self.output(name))]
        return args


def make_results_tree(
    root: Path, seeds: list[int], rounds: int = 5, concepts: list[str] | None = None
) -> ToyStudy:
    """results/toy with every ticket folder of the study (every branch), in the contract's formats."""
    concepts = CONCEPTS if concepts is None else concepts
    tickets = []
    for seed in seeds:
        for branch in BRANCHES:
            for r in branch_rounds(branch, rounds):
                folder = root / Ticket("toy", seed, branch, r).folder
                write_ticket(folder, seed, branch, r, concepts)
                tickets.append(folder)
    results = root / "results" / "toy"
    write_prepared(results)
    return ToyStudy(results, tickets, list(concepts))


def into(folder: Path) -> tuple[Path, Path]:
    """train_ticket's `checkpoint` and `metrics` in `folder`: `train_ticket(..., *into(folder))`."""
    return Path(folder) / TICKET_FILES.checkpoint, Path(folder) / TICKET_FILES.metrics


def explain_into(
    checkpoint: Path,
    data: Path,
    probe_per_class: int,
    folder: Path,
    gradcam_layer: str | None = None,
    **references: Path,
) -> None:
    """explain_ticket writing saliency.npz, saliency.csv, consistency.csv and outcomes.csv into `folder`."""
    explain_ticket(
        checkpoint, data, probe_per_class, gradcam_layer, folder / TICKET_FILES.saliency_maps,
        folder / TICKET_FILES.saliency_table, folder / TICKET_FILES.consistency,
        folder / TICKET_FILES.outcomes, **references,
    )  # fmt: skip
