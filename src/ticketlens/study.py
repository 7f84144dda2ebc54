"""The study's vocabulary, in one place: typed settings, branches, the ticket path grammar and the metrics.

In the spirit of open_lth's `foundations/paths.py` and typed hparams. Settings are frozen dataclasses
built from params that `config.validate_params` has validated: they carry no defaults of their own, and
neither does the JSON schema; every default lives only in `params.yaml`, which is complete.
The Snakefile, every rule and every package step use the names defined here. This module imports nothing
heavy (no torch, no pandas): Snakemake loads it at start-up.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from ticketlens.data.concept_names import expand_concepts

# ------------------------------------------------------------------------------------------ branches

TICKET, REINIT, RANDMASK = "ticket", "reinit", "randmask"
BRANCHES = (TICKET, REINIT, RANDMASK)  # also the order of every table and figure
CONTROLS = (REINIT, RANDMASK)
DENSE_ROUND = 0
BRANCH_LABELS = {
    TICKET: "ticket (IMP, rewound)",
    REINIT: "control: random re-init",
    RANDMASK: "control: random mask",
}
BRANCH_SHORT = {TICKET: "ticket", REINIT: "reinit", RANDMASK: "rmask"}  # table and axis headers
BRANCH_NOUNS = {TICKET: "tickets", REINIT: "random re-init control", RANDMASK: "random-mask control"}


def branch_rounds(branch: str, rounds: int) -> range:
    """Round 0 is the dense net and exists only for the ticket branch; controls start at round 1."""
    return range(DENSE_ROUND if branch == TICKET else 1, rounds + 1)


def branch_order(branch: str) -> int:
    return BRANCHES.index(branch) if branch in BRANCHES else len(BRANCHES)


# ------------------------------------------------------------------------------ explanation metrics

METHOD_NAMES = {"gradcam": "Grad-CAM", "saliency": "gradient saliency"}
# The similarity metrics of two sets of standard maps (explanations/compare.py: Grad-CAM after its ReLU,
# |gradient| saliency), with their display names and the range each metric can take. Higher is more alike
# for every one of them; each is defined for empty and constant maps (compare.py says how).
SIMILARITY_METRICS = {
    "spearman": "Spearman rank corr.",
    "iou_top10": "top-10% IoU",
    "iou_top20": "top-20% IoU",
    "ssim": "SSIM",
}
# Per-image tables of the ticket branch (explain stage -> analysis): outcomes.csv (every test image) and
# agreement.csv (the explained subset, against the seed's dense net).
OUTCOME_COLUMNS = ["image", "label", "correct", "predicted", "loss", "margin"]
AGREEMENT_COLUMNS = ["image", "label", "method", *SIMILARITY_METRICS]
METRIC_RANGES = {
    "spearman": (-1.0, 1.0),
    "iou_top10": (0.0, 1.0),
    "iou_top20": (0.0, 1.0),
    "ssim": (-1.0, 1.0),
}
REFERENCES = ("dense", "previous", "random")  # what a ticket's maps are compared with
# Rank correlation of the standard maps: an anti-correlated map scores below 0, never as consistent.
HEADLINE_METRIC = "spearman"


def concept_slug(name: str) -> str:
    """A concept name as a file stem: `has_wing_color::blue` -> `has_wing_color__blue`."""
    return name.replace("::", "__")


# ----------------------------------------------------------------------------------- path grammar

RESULTS = "results"
TICKET_DIR = "{dataset}/seed_{seed}/{branch}/round_{round}"
_TICKET_RE = re.compile(
    r"(?:^|/)(?P<dataset>[^/]+)/seed_(?P<seed>\d+)/(?P<branch>[a-z]+)/round_(?P<round>\d+)/?$"
)


@dataclass(frozen=True)
class TicketFiles:
    """The named files of a ticket folder (formats: docs/architecture.md). The rules spell the same paths as
    their outputs (tests/workflow keeps them equal); `resume.pt` and `rewind.pt` live only inside a
    `train_ticket` job, beside its checkpoint."""

    checkpoint: str = "checkpoint.pt"
    metrics: str = "metrics.json"
    resume: str = "resume.pt"
    rewind: str = "rewind.pt"
    saliency_maps: str = "saliency.npz"
    saliency_table: str = "saliency.csv"
    consistency: str = "consistency.csv"
    outcomes: str = "outcomes.csv"
    image_maps: str = "images.npz"
    agreement: str = "agreement.csv"
    tcav_calibration: str = "tcav/calibration.csv"
    tcav_concept: str = "tcav/{concept}.csv"


TICKET_FILES = TicketFiles()


@dataclass(frozen=True)
class Ticket:
    """One trained network of the study: `Ticket("mnist", 0, "ticket", 2)`; round 0 is the dense net."""

    dataset: str
    seed: int
    branch: str
    round: int

    @property
    def folder(self) -> Path:
        return Path(RESULTS, self._dir)

    @property
    def name(self) -> str:
        """`mnist/seed_0/ticket/round_1`: the ticket's identity on a command line (`from_folder` parses it)."""
        return self._dir

    @property
    def _dir(self) -> str:
        # Not dataclasses.asdict: it deep-copies, and rules ask for ticket paths tens of thousands of times.
        return TICKET_DIR.format(dataset=self.dataset, seed=self.seed, branch=self.branch, round=self.round)

    def file(self, name: str, **fields: str) -> Path:
        """`ticket.file("checkpoint")`, `ticket.file("tcav_concept", concept=slug)`."""
        return self.folder / getattr(TICKET_FILES, name).format(**fields)

    @property
    def is_dense(self) -> bool:
        return self.branch == TICKET and self.round == DENSE_ROUND

    @property
    def dense(self) -> Ticket:
        return Ticket(self.dataset, self.seed, TICKET, DENSE_ROUND)

    def parent(self, one_shot: bool) -> Ticket | None:
        """The lineage, in one place: the checkpoint this ticket is trained from. A ticket round prunes the
        previous round (the dense net when `pruning.one_shot`); a control takes the ticket of the same round
        (its mask, or its sparsity and rewind weights); the dense net has none."""
        if self.branch != TICKET:
            return self.at(branch=TICKET)
        if self.round == DENSE_ROUND:
            return None
        return self.at(round=DENSE_ROUND if one_shot else self.round - 1)

    @property
    def previous(self) -> Ticket | None:
        """The ticket whose maps this one's are compared with as `previous`: the same branch one round
        earlier, where round 1 of every branch follows the shared dense net; none for the dense net."""
        if self.round == DENSE_ROUND:
            return None
        return self.at(branch=self.branch if self.round > 1 else TICKET, round=self.round - 1)

    def at(self, **changes: Any) -> Ticket:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_folder(cls, folder: str | Path) -> Ticket:
        """Parse `.../{dataset}/seed_{s}/{branch}/round_{r}` (the inverse of `folder`)."""
        match = _TICKET_RE.search(Path(folder).as_posix())
        if match is None or match["branch"] not in BRANCHES:
            raise ValueError(f"{folder} is not a ticket folder ({RESULTS}/{TICKET_DIR})")
        return cls(match["dataset"], int(match["seed"]), match["branch"], int(match["round"]))


# The named files of a dataset folder results/{dataset}/ (formats: docs/architecture.md). The rules spell
# the same paths as their outputs (tests/workflow keeps them equal).
DATASET_FILES = {
    "prepared_data": "prepared/data.pt",
    "prepared_meta": "prepared/meta.csv",
    "random_sets": "concepts/random_sets.pt",  # their roles: tcav_significance.split_random_sets
    "calibration_sets": "concepts/calibration_sets.pt",  # held out, never in the pool: run as concepts
    "concept_set": "concepts/{concept}.pt",
    "summary": "summary.csv",
    "summary_agg": "summary_agg.csv",
    "tcav_summary": "tcav_summary.csv",
    "findings": "findings.json",
    "metrics": "metrics.json",
    "report": "report.md",
    "figures": "figures",
}
# The cross-dataset outputs under results/ (rule build_study_report).
STUDY_OUTPUTS = {"report": "report.md", "metrics": "metrics.json", "summary": "summary.txt"}
# The small results that git tracks (dvc.yaml `cache: false`): what a fresh clone can diff and
# `ticketlens verify` compares. Everything else under results/ is DVC-cached.
TRACKED_DATASET_OUTPUTS = ("summary", "summary_agg", "tcav_summary", "findings", "metrics", "report")


def tracked_results(datasets: Iterable[str]) -> list[Path]:
    """The git-tracked result files of a study over `datasets`, relative to results/."""
    files = [Path(name) for name in STUDY_OUTPUTS.values()]
    for dataset in datasets:
        files += [Path(dataset) / DATASET_FILES[key] for key in TRACKED_DATASET_OUTPUTS]
    return files


@dataclass(frozen=True)
class DatasetFiles:
    """The files of one dataset's folder: `DatasetFiles("mnist").file("summary_agg")`."""

    dataset: str

    @property
    def folder(self) -> Path:
        return Path(RESULTS) / self.dataset

    def file(self, name: str, **fields: str) -> Path:
        """`files.file("findings")`, `files.file("concept_set", concept=slug)`."""
        return self.folder / DATASET_FILES[name].format(**fields)


# --------------------------------------------------------------------------------- typed settings


class Settings:
    """Mixin: build a frozen settings dataclass from a validated, default-filled params mapping."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown settings {sorted(unknown)}")
        return cls(**{name: _typed(hints[name], values[name]) for name in names if name in values})

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.from_dict(json.loads(text))

    def to_dict(self, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        values = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: v for k, v in values.items() if k not in exclude}

    def to_json(self, exclude: tuple[str, ...] = ()) -> str:
        """Canonical JSON (sorted keys): what a rule passes and Snakemake compares to decide re-runs."""
        return json.dumps(self.to_dict(exclude), sort_keys=True)


def _typed(hint: Any, value: Any) -> Any:
    """Nested sections become their dataclasses and lists become tuples (hashable, immutable)."""
    if isinstance(hint, type) and issubclass(hint, Settings) and isinstance(value, dict):
        return hint.from_dict(value)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        return value if value is None else _typed(options[0], value)
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(value)
    return value


@dataclass(frozen=True)
class StudySettings(Settings):
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    rounds: int
    controls: tuple[str, ...]
    threads: int
    kernels: str  # reproducible | native (runtime.kernels)
    max_jobs: int
    device: str  # auto | cpu | cuda | cuda:N (ticketlens.device.resolve_device)

    @property
    def branches(self) -> tuple[str, ...]:
        return (TICKET, *(b for b in CONTROLS if b in self.controls))

    def tickets(self, dataset: str) -> list[Ticket]:
        """Every ticket of a dataset: seeds x branches x rounds."""
        return [
            Ticket(dataset, seed, branch, r)
            for seed in self.seeds
            for branch in self.branches
            for r in branch_rounds(branch, self.rounds)
        ]


@dataclass(frozen=True)
class PruningSettings(Settings):
    scope: str
    rate_conv: float
    rate_fc: float
    rate_output: float
    exclude: tuple[str, ...]
    one_shot: bool
    rewind_iteration: int


@dataclass(frozen=True)
class TcavSettings(Settings):
    layers: tuple[str, ...] | None
    n_random_sets: int
    set_size: int
    inputs_per_class: int
    target_classes: tuple[str, ...] | int | str  # "all", a count, or class names (explanations.tcav)
    alpha: float
    classifier: str
    n_counterparts: int
    n_null_draws: int
    n_calibration_sets: int


@dataclass(frozen=True)
class ExplanationSettings(Settings):
    probe_per_class: int
    images_per_class: int | None  # the per-image agreement subset (None: every test image)
    gradcam_layer: str | None
    tcav: TcavSettings


@dataclass(frozen=True)
class FindingsSettings(Settings):
    """The `findings` section: the level of every test of the findings and the non-inferiority margins."""

    alpha: float
    accuracy_margin: float
    consistency_margin: float
    concept_margin: float  # concept loss: "kept" when ticket minus dense TCAV effect is shown within it
    permutations: int  # permutation draws of the drift-first tests (analysis.forgetting)
    margin_bins: int  # dense-margin strata of the second drift-first test


@dataclass(frozen=True)
class TrainingSettings(Settings):
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    iterations: int
    eval_every: int
    checkpoint_every: int
    init: str  # default | glorot_normal (models.build_model)
    test_at: str  # "end" or "early_stop": where the test accuracy of a round is taken
    model_init: str  # scratch | imagenet (pretrained.py)
    weights_file: str | None  # the ImageNet weights file; None: torchvision's cache folder
    augment: str  # none | crop_flip (augment.py)
    precision: str  # fp32 | bf16 (device.autocast)
    channels_last: bool | None  # None: on for CUDA only
    lr_schedule: str  # "constant" or "cosine" (lottery.training.learning_rate)


@dataclass(frozen=True)
class ConceptOptions(Settings):
    min_certainty: int
    class_majority: bool
    images: str  # part_patches | part_crops | whole (data/attribute_concepts.py)


@dataclass(frozen=True)
class DataSettings(Settings):
    """The keys of a `datasets.<name>` section that change the prepared data; None: not a key of this
    dataset (e.g. `source` exists for MNIST only). Values come from params.yaml, never from here."""

    root: str
    source: str | None = None  # MNIST
    validation_size: int | None = None
    train_size: int | None = None
    image_size: int | None = None  # birds
    crop_to_box: bool | None = None
    validation_fraction: float | None = None
    n_classes: int | None = None  # synthbirds generator
    images_per_class: int | None = None
    generate_size: int | None = None
    shortcut_rate: float | None = None
    generator_seed: int | None = None


@dataclass(frozen=True)
class DatasetSettings(Settings):
    """One `datasets.<name>` section, its data-preparation keys gathered in `data`."""

    data: DataSettings
    model: str
    model_width: float
    concepts: tuple[str, ...]
    training: TrainingSettings
    concept_options: ConceptOptions | None = None  # birds only

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DatasetSettings:
        data_keys = {f.name for f in dataclasses.fields(DataSettings)}
        rest = {k: v for k, v in values.items() if k not in data_keys}
        if isinstance(values.get("data"), dict):  # the nested form that `to_dict` writes
            return super().from_dict(values)
        data = DataSettings.from_dict({k: v for k, v in values.items() if k in data_keys})
        if "concepts" in rest:  # collections (cbm112) become their members: one concept a job
            rest["concepts"] = list(expand_concepts(rest["concepts"]))
        return super().from_dict({**rest, "data": data})


@dataclass(frozen=True)
class StudyParams(Settings):
    """The whole validated params.yaml."""

    study: StudySettings
    pruning: PruningSettings
    explanations: ExplanationSettings
    findings: FindingsSettings
    datasets: dict[str, DatasetSettings]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudyParams:
        return cls(
            study=StudySettings.from_dict(values["study"]),
            pruning=PruningSettings.from_dict(values["pruning"]),
            explanations=ExplanationSettings.from_dict(values["explanations"]),
            findings=FindingsSettings.from_dict(values["findings"]),
            datasets={
                name: DatasetSettings.from_dict(section) for name, section in values["datasets"].items()
            },
        )

    def job_count(self) -> int:
        """The number of Snakemake jobs the study expands to (see workflow/rules/), without building a DAG."""
        jobs = 2  # build_study_report and all
        rounds = sum(len(branch_rounds(b, self.study.rounds)) for b in self.study.branches)
        for name in self.study.datasets:
            concepts = len(self.datasets[name].concepts)
            tickets = len(self.study.seeds) * rounds
            # prepare, random sets, summarize, report; per ticket: train, explain, TCAV null, a table per concept
            jobs += 4 + concepts + tickets * (3 + concepts)
        return jobs
