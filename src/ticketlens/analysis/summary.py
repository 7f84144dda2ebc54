"""Per-dataset tables: read every ticket folder into one row per ticket, and aggregate rows over seeds.

`summarize_dataset` is the only function here that touches the file system: it reads the per-ticket
targets of docs/architecture.md (the tables, and from saliency.npz the dense nets' maps for the seed-to-seed
ceiling and every ticket's per-image test outcomes) and writes summary.csv, summary_agg.csv,
tcav_summary.csv, findings.json and metrics.json atomically. The claims themselves are computed from these
tables in `findings`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ticketlens import fileio
from ticketlens.analysis.calibration import calibration_cells, tcav_calibration
from ticketlens.analysis.empty_maps import dense_pair_empty, empty_map_findings, empty_pair_columns
from ticketlens.analysis.findings import compact_metrics, compute_findings
from ticketlens.analysis.forgetting import forgetting_findings
from ticketlens.analysis.tables import aggregate_over_seeds, consistency_column
from ticketlens.analysis.ticket_tables import (
    TicketShape,
    read_consistency_table,
    read_saliency_table,
    read_table,
    read_tcav_tables,
    ticket_shape,
)
from ticketlens.errors import UserError
from ticketlens.explanations.compare import dense_seed_consistency, load_standard_maps
from ticketlens.explanations.tcav_stats import (
    compare_tcav,
    summarize_tcav,
)
from ticketlens.study import (
    AGREEMENT_COLUMNS,
    DENSE_ROUND,
    OUTCOME_COLUMNS,
    SIMILARITY_METRICS,
    TICKET,
    TICKET_DIR,
    FindingsSettings,
    Ticket,
    branch_order,
    concept_slug,
)

log = logging.getLogger(__name__)

TicketKey = tuple[int, str, int]  # (seed, branch, round)

# box_area / part_area (share of the image) are the chance level of the matching mass.
LOCALISATION = ("box_mass", "box_hit", "box_area", "part_mass", "part_hit", "part_area")
FAITHFULNESS = ("deletion_auc", "insertion_auc")
TCAV_AGREEMENT = ("tcav_rank_corr_dense", "tcav_jaccard_dense", "tcav_n_changed")


# ---------------------------------------------------------------------------------------------- files


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    fileio.write_csv(frame, path, float_format="%.6g")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path} not found (run the train step for this ticket first)")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class TicketInputs:
    """The files of one ticket that the summary reads (formats: docs/architecture.md)."""

    ticket: Ticket
    metrics: Path
    saliency_table: Path
    consistency: Path
    saliency_maps: Path
    calibration: Path
    tcav: tuple[Path, ...]  # one table per concept, in the study's concept order


def _owner(path: Path) -> Ticket:
    """The ticket whose folder holds `path` (directly, or in a subfolder such as tcav/), by the path grammar."""
    for folder in Path(path).parents[:2]:
        try:
            return Ticket.from_folder(folder)
        except ValueError:
            continue
    raise UserError(f"{path} is not a file of a ticket folder (results/{TICKET_DIR}/...)")


def group_by_ticket(
    metrics: Sequence[Path],
    saliency_tables: Sequence[Path],
    consistency_tables: Sequence[Path],
    saliency_maps: Sequence[Path],
    calibration_tables: Sequence[Path],
    concepts: Sequence[str],
    tcav_table_pattern: str,
) -> list[TicketInputs]:
    """Each ticket's files, matched by the ticket folder that holds them, in the order of `metrics`; every
    ticket needs exactly one of each. The concept tables are many (tickets x concepts: ~24k for a CUB-sized
    study, too many for one command line), so the rule passes their pattern (rule `tcav_concept`'s output,
    with {dataset}, {seed}, {branch}, {round} and {concept})."""
    singles = {
        "metrics": metrics,
        "saliency_table": saliency_tables,
        "consistency": consistency_tables,
        "saliency_maps": saliency_maps,
        "calibration": calibration_tables,
    }
    found: dict[str, dict[Ticket, Path]] = {}
    for role, paths in singles.items():
        found[role] = {}
        for path in map(Path, paths):
            ticket = _owner(path)
            if ticket in found[role]:
                raise UserError(f"{path}: two {role} files given for {ticket.name}")
            found[role][ticket] = path
    tickets = list(found["metrics"])
    for role, files in found.items():
        if set(files) != set(tickets):
            odd = sorted(t.name for t in set(files) ^ set(tickets))
            raise UserError(f"the {role} files and the metrics files are of different tickets: {odd}")

    def tcav_tables(ticket: Ticket) -> tuple[Path, ...]:
        fields = {
            "dataset": ticket.dataset,
            "seed": ticket.seed,
            "branch": ticket.branch,
            "round": ticket.round,
        }
        return tuple(Path(tcav_table_pattern.format(**fields, concept=concept_slug(c))) for c in concepts)

    return [TicketInputs(t, *(found[role][t] for role in singles), tcav_tables(t)) for t in tickets]


# ----------------------------------------------------------------------------------- per ticket


def metrics_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "remaining_fraction": float(metrics["remaining_fraction"]),
        "test_accuracy": float(metrics["test_accuracy"]),
        "test_loss": float(np.nan if metrics.get("test_loss") is None else metrics["test_loss"]),
        "early_stop_iteration": float(metrics.get("early_stop_iteration", np.nan)),
        "early_stop_val_accuracy": float(metrics.get("early_stop_val_accuracy", np.nan)),
        "late_val_gain": float(metrics.get("late_val_gain", np.nan)),
    }


def consistency_columns(consistency: pd.DataFrame, is_dense: bool) -> dict[str, float]:
    """Mean over probe images of each reference x method x metric: `cons_{reference}_{method}_{metric}`.

    The dense net compared with itself is identical by definition, so its missing `dense` rows are 1.0:
    this anchors the consistency curves at round 0 without a self-comparison file.
    """
    out: dict[str, float] = {}
    metrics = [m for m in SIMILARITY_METRICS if m in consistency.columns]
    means = consistency.groupby(["reference", "method"])[metrics].mean()
    for (reference, method), row in means.iterrows():
        for metric in metrics:
            out[consistency_column(reference, method, metric)] = float(row[metric])
    if is_dense:
        for method in consistency["method"].unique():
            for metric in metrics:
                out.setdefault(consistency_column("dense", method, metric), 1.0)
    return out


def saliency_columns(saliency: pd.DataFrame) -> dict[str, float]:
    """Localisation and faithfulness per method (mean over probe images), the number of maps with no
    positive cell per method (`empty_{method}`: for Grad-CAM, maps its ReLU emptied; for gradient saliency, an all-zero gradient) and probe accuracy."""
    out: dict[str, float] = {}
    for method, group in saliency.groupby("method"):
        for prefix, columns in (("loc", LOCALISATION), ("faith", FAITHFULNESS)):
            for col in columns:
                if col in group:
                    out[f"{prefix}_{method}_{col}"] = float(group[col].mean())
        if "empty" in group:
            out[f"empty_{method}"] = float(group["empty"].astype(bool).sum())
    if "correct" in saliency:
        # The same probe appears once per method: take one method so images are not double counted.
        first = saliency[saliency["method"] == saliency["method"].iloc[0]]
        out["n_probe"] = float(len(first))
        out["probe_accuracy"] = float(first["correct"].astype(float).mean())
    return out


def read_ticket_tcav(
    files: TicketInputs, alpha: float, shape: TicketShape | None = None
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """(per concept x layer x class decided summary, calibration counts per calibration set) of one ticket.

    The decision (Holm over the ticket's concepts x layers x classes, learnability, direction) needs all of
    the ticket's concepts, so it is made here (`tcav_stats`); the calibration sets of tcav/calibration.csv are
    judged as one more concept each."""
    shape = shape if shape is not None else ticket_shape(files.ticket, files.saliency_maps)
    frames, calibration = read_tcav_tables(files.tcav, files.calibration, shape)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return summarize_tcav(rows, alpha), calibration_cells(rows, calibration, alpha)


def tcav_count_columns(table: pd.DataFrame) -> dict[str, float]:
    significant = table[table["significant"].astype(bool)] if len(table) else table
    return {
        "tcav_n_significant": float(len(significant)),
        "tcav_n_concepts_significant": float(significant["concept"].nunique()) if len(table) else 0.0,
    }


def tcav_agreement(table: pd.DataFrame, dense: pd.DataFrame) -> dict[str, float]:
    """Ticket vs dense net: rank correlation of concept statistics, Jaccard of the significant (concept,
    layer, class, direction) sets (NaN when both are empty) and the number of concept x layer x class
    decisions that differ, by `tcav_stats.compare_tcav` (no new test: the calibrated decisions compared)."""
    result = compare_tcav(table, dense)
    return {
        "tcav_rank_corr_dense": float(result["spearman"]),
        "tcav_jaccard_dense": float(result["jaccard"]),
        "tcav_n_changed": float(result["changes"]["changed"].sum()),
    }


# ------------------------------------------------------------------------------- TCAV calibration


def calibration_metrics(calibration: dict[str, Any]) -> dict[str, Any]:
    """Flat keys for metrics.json (`dvc metrics`)."""
    keys = ("rows", "distinct_sets", "rate_uncorrected", "bootstrap_upper_99", "rate_gated", "rate_holm",
            "rate_sets_flagged_holm")  # fmt: skip
    values = {f"tcav_calibration_{key}": calibration.get(key, float("nan")) for key in keys}
    return {
        k: float(f"{v:.6g}") if isinstance(v, float) else v
        for k, v in fileio.clean_json(values).items()
        if v is not None
    }


# -------------------------------------------------------------------------------------- entry point


def ticket_row(
    files: TicketInputs, dense_saliency: Path | None = None, shape: TicketShape | None = None
) -> dict[str, Any]:
    """One summary row without TCAV: identity, metrics.json, consistency.csv and saliency.csv columns; the
    tables are read with the rows `shape` (the ticket's saliency.npz) says they have."""
    ticket = files.ticket
    shape = shape if shape is not None else ticket_shape(ticket, files.saliency_maps)
    row: dict[str, Any] = {"seed": ticket.seed, "branch": ticket.branch, "round": ticket.round}
    row.update(metrics_columns(_read_json(files.metrics)))
    consistency = read_consistency_table(files.consistency, shape)
    saliency = read_saliency_table(files.saliency_table, shape)
    row.update(consistency_columns(consistency, ticket.is_dense))
    row.update(saliency_columns(saliency))
    if not ticket.is_dense and dense_saliency is not None:  # pairs with an empty map (`analysis.empty_maps`)
        # the dense net of the seed explains the same probe images with the same methods
        row.update(empty_pair_columns(consistency, saliency, read_saliency_table(dense_saliency, shape)))
    return row


def ticket_tables(
    inputs: Sequence[TicketInputs], alpha: float
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """Read every ticket's tables: (summary without TCAV agreement, all tickets' TCAV summaries, the TCAV
    calibration counts per ticket and calibration set). Rows come in seed, branch, round order."""
    ordered = sorted(inputs, key=lambda f: (f.ticket.seed, branch_order(f.ticket.branch), f.ticket.round))
    dense_saliency = {f.ticket.seed: f.saliency_table for f in ordered if f.ticket.is_dense}
    rows, tcav_frames, calibration = [], [], []
    for files in ordered:
        ticket = files.ticket
        shape = ticket_shape(ticket, files.saliency_maps)
        row = ticket_row(files, dense_saliency.get(ticket.seed), shape)
        tcav, cells = read_ticket_tcav(files, alpha, shape)
        identity = {"seed": ticket.seed, "branch": ticket.branch, "round": ticket.round}
        calibration += [identity | cell for cell in cells]
        row.update(tcav_count_columns(tcav))
        rows.append(row)
        tcav_frames.append(
            tcav.assign(
                seed=ticket.seed,
                branch=ticket.branch,
                round=ticket.round,
                remaining_fraction=row["remaining_fraction"],
            )
        )
    tcav_all = pd.concat(tcav_frames, ignore_index=True) if tcav_frames else pd.DataFrame()
    first = ["seed", "branch", "round", "remaining_fraction"]
    tcav_all = tcav_all[first + [c for c in tcav_all.columns if c not in first]]
    return pd.DataFrame(rows), tcav_all, calibration


def add_tcav_agreement(summary: pd.DataFrame, tcav_all: pd.DataFrame) -> pd.DataFrame:
    """TCAV agreement of every ticket with the dense net of the same seed (see `tcav_agreement`)."""
    tables = {key: group for key, group in tcav_all.groupby(["seed", "branch", "round"])}
    out = []
    for seed, branch, r in summary[["seed", "branch", "round"]].itertuples(index=False, name=None):
        key, dense_key = (seed, branch, r), (seed, TICKET, DENSE_ROUND)
        if key not in tables or dense_key not in tables:
            out.append(dict.fromkeys(TCAV_AGREEMENT, np.nan))
        else:
            out.append(tcav_agreement(tables[key], tables[dense_key]))
    return pd.concat([summary.reset_index(drop=True), pd.DataFrame(out)], axis=1)


def read_map_files(
    inputs: Sequence[TicketInputs],
) -> tuple[dict[TicketKey, np.ndarray], pd.DataFrame, pd.DataFrame]:
    """From every ticket's saliency.npz: its per-image test outcomes (`test_correct`), the dense
    seed-to-seed consistency of the dense nets' standard maps (the ceiling; one row per seed pair x
    method, `explanations.compare.dense_seed_consistency`) and the same pairs' empty-map share and
    consistency without empty maps (`analysis.empty_maps.dense_pair_empty`)."""
    outcomes: dict[TicketKey, np.ndarray] = {}
    dense_maps: dict[int, dict[str, np.ndarray]] = {}
    for files in inputs:
        ticket, path = files.ticket, files.saliency_maps
        npz = fileio.load_npz(path, "saliency maps", ("test_correct",))
        if "test_correct" in npz:
            outcomes[(ticket.seed, ticket.branch, ticket.round)] = npz["test_correct"].astype(bool)
        if ticket.is_dense:
            dense_maps[ticket.seed] = load_standard_maps(path)
    try:
        ceiling = dense_seed_consistency(dense_maps)
    except ValueError as err:
        raise UserError(f"{err}: re-run the explain step of every dense net with the same params") from None
    return outcomes, ceiling, dense_pair_empty(dense_maps)


def read_image_tables(paths: Sequence[Path], what: str, columns: Sequence[str]) -> pd.DataFrame:
    """The per-image tables (outcomes.csv or agreement.csv) of the ticket branch, each row with its ticket's
    seed and round; one table per ticket."""
    frames, seen = [], set()
    for path in map(Path, paths):
        ticket = _owner(path)
        if ticket.branch != TICKET:
            raise UserError(f"{path}: {what} are read for the ticket branch only, got {ticket.name}")
        if ticket in seen:
            raise UserError(f"{path}: two {what} files given for {ticket.name}")
        seen.add(ticket)
        frames.append(read_table(path, what, columns).assign(seed=ticket.seed, round=ticket.round))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarize_dataset(
    dataset: str,
    ticket_metrics: list[Path],
    saliency_tables: list[Path],
    consistency_tables: list[Path],
    saliency_maps: list[Path],
    calibration_tables: list[Path],
    outcome_tables: list[Path],
    agreement_tables: list[Path],
    concepts: Sequence[str],
    tcav_table_pattern: str,
    alpha: float,
    settings: FindingsSettings,
    summary: Path,
    aggregate: Path,
    tcav_summary: Path,
    findings: Path,
    metrics: Path,
) -> dict[str, Any]:
    """Read every ticket's files (each ticket's metrics.json, saliency.csv, consistency.csv, saliency.npz,
    tcav/calibration.csv, each matched to its ticket by its folder, and the concepts' tables by
    `tcav_table_pattern`; the ticket branch's outcomes.csv and agreement.csv for the forgetting analysis); write
    summary.csv, summary_agg.csv, tcav_summary.csv, findings.json and metrics.json to the given paths;
    return the findings. `alpha` is the TCAV level, `settings` the findings' tests (params `findings`)."""
    inputs = group_by_ticket(
        ticket_metrics,
        saliency_tables,
        consistency_tables,
        saliency_maps,
        calibration_tables,
        concepts,
        tcav_table_pattern,
    )
    table, tcav_all, calibration = ticket_tables(inputs, alpha)
    table = add_tcav_agreement(table, tcav_all)
    outcomes, ceiling, empty_ceiling = read_map_files(inputs)
    result = compute_findings(table, tcav_all, dataset, settings, ceiling, outcomes, tcav_alpha=alpha)
    result["tcav_calibration"] = tcav_calibration(calibration, alpha)
    result["empty_pairs"] = empty_map_findings(table, empty_ceiling, settings)
    tickets = table[table["branch"] == TICKET]
    remaining = tickets.groupby("round")["remaining_fraction"].mean()
    result["forgetting"] = forgetting_findings(
        read_image_tables(outcome_tables, "per-image outcomes", OUTCOME_COLUMNS),
        read_image_tables(agreement_tables, "per-image agreements", AGREEMENT_COLUMNS),
        settings.alpha,
        settings.permutations,
        settings.margin_bins,
        {int(r): float(v) for r, v in remaining.items()},
    )
    write_csv(table, Path(summary))
    write_csv(aggregate_over_seeds(table), Path(aggregate))
    write_csv(tcav_all, Path(tcav_summary))
    fileio.write_json(result, Path(findings))
    fileio.write_json(
        {**compact_metrics(table, result), **calibration_metrics(result["tcav_calibration"])}, Path(metrics)
    )
    log.info("%s: %d tickets summarised into %s", dataset, len(table), Path(summary).parent)
    return result
