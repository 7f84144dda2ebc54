"""Snakemake re-runs exactly what a params change affects, and refuses to start on a replaced checkpoint.

One tiny MNIST study (idx files, dense net + one round + the reinit control) is run once; each test then
changes params.yaml and asks `snakemake -n` which rules would run.
"""

from __future__ import annotations

import copy
import gzip
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import TINY, make_study_dir, snakemake, write_params

# The end-to-end tests' tiny study, reduced to MNIST with one control (enough to see what re-runs).
STUDY = copy.deepcopy(TINY)
STUDY["study"] |= {"datasets": ["mnist"], "controls": ["reinit"]}
STUDY["datasets"] = {"mnist": STUDY["datasets"]["mnist"]}
TRAINING = STUDY["datasets"]["mnist"]["training"]
DATA_RULES = {"prepare_dataset", "make_random_sets", "make_concept_set"}
TICKET_RULES = {"train_ticket", "explain_ticket", "tcav_calibration"}
REPORT_RULES = {"summarize_dataset", "build_dataset_report", "build_study_report", "all"}


def planned_jobs(workdir: Path) -> dict[str, int]:
    """Rule -> job count of a dry run (empty when there is nothing to do)."""
    result = snakemake(workdir, "-n", "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE) if m[1] != "total"
    }


@contextmanager
def params_changed(workdir: Path, change) -> Iterator[None]:
    """params.yaml with `change(params)` applied, restored afterwards."""
    params = copy.deepcopy(STUDY)
    change(params)
    write_params(workdir, params)
    try:
        yield
    finally:
        write_params(workdir, STUDY)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("reruns")
    make_study_dir(workdir, STUDY)
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


@pytest.mark.slow
def test_an_unchanged_study_has_nothing_to_do(study: Path) -> None:
    assert planned_jobs(study) == {}


@pytest.mark.slow
def test_adding_a_concept_computes_only_its_pieces(study: Path) -> None:
    with params_changed(study, lambda p: p["datasets"]["mnist"]["concepts"].append("stroke_loop")):
        jobs = planned_jobs(study)
    assert jobs == {"make_concept_set": 1, "tcav_concept": 3, **dict.fromkeys(REPORT_RULES, 1)}


@pytest.mark.slow
def test_changing_the_learning_rate_keeps_the_data_and_concept_sets(study: Path) -> None:
    with params_changed(study, lambda p: p["datasets"]["mnist"]["training"].update(lr=0.01)):
        jobs = planned_jobs(study)
    assert not DATA_RULES & set(jobs)
    # explain_images: the ticket branch only (dense net and round 1), for the forgetting analysis
    assert jobs == {**dict.fromkeys(TICKET_RULES, 3), "explain_images": 2, "tcav_concept": 3,
                    **dict.fromkeys(REPORT_RULES, 1)}  # fmt: skip


@pytest.mark.slow
def test_changing_tcav_inputs_reruns_tcav_only(study: Path) -> None:
    with params_changed(study, lambda p: p["explanations"]["tcav"].update(inputs_per_class=3)):
        jobs = planned_jobs(study)
    assert jobs == {"tcav_calibration": 3, "tcav_concept": 3, **dict.fromkeys(REPORT_RULES, 1)}


@pytest.mark.slow
def test_a_checkpoint_replaced_with_cp_p_stops_snakemake_before_any_job(study: Path) -> None:
    folder = Path("results/mnist/seed_0/ticket/round_1")
    ticket, control = (
        study / folder / "checkpoint.pt",
        study / "results/mnist/seed_0/reinit/round_1/checkpoint.pt",
    )
    backup = study / "ticket_checkpoint.bak"
    shutil.copy2(ticket, backup)
    shutil.copy2(control, ticket)  # cp -p: the old modification time, so Snakemake alone sees no change
    try:
        result = snakemake(study, "-n", "--cores", "1")
    finally:
        shutil.copy2(backup, ticket)
    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if line.startswith("ticketlens: ")]
    assert len(message) == 1
    assert (
        f"{folder}/checkpoint.pt is not the checkpoint that {folder}/metrics.json was written with"
        in message[0]
    )
    assert message[0].endswith(f"Delete {folder} and re-run (what depends on them is re-run too)")
    assert planned_jobs(study) == {}  # restored: the study is whole again


@pytest.mark.slow
def test_an_edited_raw_label_file_re_prepares_the_dataset(study: Path) -> None:
    """Issue 22 item 4: the idx files are inputs of prepare_dataset, so an edited label file re-prepares
    MNIST and re-makes everything from it (main said "Nothing to be done")."""
    labels = study / "tests/data/tiny_mnist/train-labels-idx1-ubyte.gz"
    original, stat = labels.read_bytes(), labels.stat()
    labels.write_bytes(gzip.compress(gzip.decompress(original)[:-1] + b"\x07", mtime=0))
    try:
        jobs = planned_jobs(study)
    finally:
        labels.write_bytes(original)
        os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert jobs["prepare_dataset"] == 1 and jobs["train_ticket"] == 3 and jobs["make_random_sets"] == 1
    assert planned_jobs(study) == {}  # restored: the study is whole again


@pytest.mark.slow
@pytest.mark.parametrize(
    ("deleted", "expected"),
    [
        # the dense net: every round and control of the seed is made from it
        (
            "results/mnist/seed_0/ticket/round_0",
            {"train_ticket": 3, "explain_ticket": 3, "tcav_calibration": 3},
        ),
        ("results/mnist/concepts/stroke_horizontal.pt", {"make_concept_set": 1, "tcav_concept": 3}),
        ("results/mnist/prepared/data.pt", {"prepare_dataset": 1, "train_ticket": 3, "make_random_sets": 1}),
    ],
    ids=["dense_round", "concept_set", "data"],
)
def test_a_deleted_intermediate_is_made_again_with_what_follows_it(study: Path, deleted, expected) -> None:
    """Issue 22 item 2: `rm -rf` of a round folder, a concept set or data.pt (what the refusal messages
    advise) is made again by the next run; main said "Nothing to be done" and left it missing."""
    path, aside = study / deleted, study / "aside"
    shutil.move(path, aside)
    try:
        jobs = planned_jobs(study)
    finally:
        shutil.move(aside, path)
    assert {rule: jobs.get(rule) for rule in expected} == expected
    assert set(REPORT_RULES) <= set(jobs)
    assert planned_jobs(study) == {}  # put back: the study is whole again


@pytest.mark.slow
def test_copied_results_without_metadata_retrain_what_a_params_change_affects(
    study: Path, tmp_path: Path
) -> None:
    """Issue 22 item 1: a finished study copied without Snakemake's metadata (`cp -a` of the folder, as
    `dvc pull` / `dvc checkout` deliver results), then lr changed: main said "Nothing to be done"; now each
    ticket's metrics.json records the settings that trained it and the start-up re-trains the tickets."""
    copied = tmp_path / "copy"
    shutil.copytree(study, copied, ignore=shutil.ignore_patterns(".snakemake"))  # copy2 keeps the times
    assert planned_jobs(copied) == {}
    params = copy.deepcopy(STUDY)
    params["datasets"]["mnist"]["training"]["lr"] = 0.004
    write_params(copied, params)
    result = snakemake(copied, "-n", "--cores", "1")
    assert (
        "results/mnist: 3 trained ticket(s) were made with other training or pruning params" in result.stderr
    )
    assert planned_jobs(copied) == {
        **dict.fromkeys(TICKET_RULES, 3),
        "explain_images": 2,  # the ticket branch's pruned rounds (its dense round's maps are the reference)
        "tcav_concept": 3,
        **dict.fromkeys(REPORT_RULES, 1),
    }
    write_params(copied, STUDY)  # back to the params the results were made with: nothing to do again
    assert planned_jobs(copied) == {}


@pytest.mark.slow
def test_the_readme_override_of_nested_numbers_works(study: Path) -> None:
    result = snakemake(study, "-n", "--cores", "1", "--config", "study={seeds: [0, 1]}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^train_ticket\s+3\s*$", result.stdout + result.stderr, re.MULTILINE)  # seed 1 only


def test_bird_attribute_names_with_parentheses_reach_their_jobs(tmp_path: Path) -> None:
    params = copy.deepcopy(STUDY)
    params["study"]["datasets"] = ["synthbirds"]
    params["datasets"] = {
        "synthbirds": {"model": "conv4", "concepts": ["has_size::small_(5_-_9_in)"], "training": TRAINING}
    }
    write_params(tmp_path, params)
    jobs = planned_jobs(tmp_path)
    assert jobs["make_concept_set"] == 1 and jobs["tcav_concept"] == 3
