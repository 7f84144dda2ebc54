"""Checkpoints know what they are and what they were made from; readers and the start-up check refuse
anything else (a control copied over a ticket, a replaced parent, maps of another checkpoint)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import TOY, TOY_PRUNING, into, make_toy_data
from ticketlens import fileio
from ticketlens.data.prepared import save_prepared
from ticketlens.errors import UserError
from ticketlens.lottery.rounds import load_model, train_ticket
from ticketlens.runtime import startup
from ticketlens.runtime.startup import check_results
from ticketlens.study import StudyParams, StudySettings, Ticket

DENSE, ROUND1, REINIT1 = (
    Ticket("toy", 0, "ticket", 0),
    Ticket("toy", 0, "ticket", 1),
    Ticket("toy", 0, "reinit", 1),
)
PARAMS = StudyParams(
    study=StudySettings(
        datasets=("toy",),
        seeds=(0,),
        rounds=1,
        controls=("reinit",),
        threads=1,
        max_jobs=100,
        device="cpu",
        kernels="reproducible",
    ),
    pruning=TOY_PRUNING,
    explanations=None,  # type: ignore[arg-type]  # not read by the start-up check
    findings=None,  # type: ignore[arg-type]
    datasets={},
)


def train(ticket: Ticket, data: Path, **links: Path) -> dict:
    """Train into the ticket's own folder under results/ (the working directory is the study folder)."""
    return train_ticket(ticket, data, TOY.model, TOY.model_width, TOY.training, TOY_PRUNING, **links)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder with the dense net, ticket round 1 and its reinit control, trained once."""
    root = tmp_path_factory.mktemp("template")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        save_prepared(make_toy_data(), Path("data.pt"))
        train(DENSE, Path("data.pt"))
        train(ROUND1, Path("data.pt"), previous=DENSE.file("checkpoint"))
        train(REINIT1, Path("data.pt"), ticket_checkpoint=ROUND1.file("checkpoint"))
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def study(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the template (file times kept), as the working directory."""
    root = tmp_path / "study"
    shutil.copytree(template, root)  # copy2: keeps modification times, like `cp -p`
    monkeypatch.chdir(root)
    return root


def one_line(info: pytest.ExceptionInfo[UserError]) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_consistent_study_passes_and_metrics_record_the_hashes(study: Path) -> None:
    check_results(PARAMS)
    metrics = json.loads(ROUND1.file("metrics").read_text())
    assert metrics["checkpoint_sha256"] == fileio.file_sha256(ROUND1.file("checkpoint"))
    assert metrics["parent_sha256"] == fileio.file_sha256(DENSE.file("checkpoint"))
    reinit = json.loads(REINIT1.file("metrics").read_text())
    assert reinit["parent_sha256"] == metrics["checkpoint_sha256"]


@pytest.mark.parametrize("copy", [shutil.copyfile, shutil.copy2], ids=["cp", "cp -p"])
def test_control_copied_over_the_ticket_is_refused_everywhere(study: Path, copy) -> None:
    copy(REINIT1.file("checkpoint"), ROUND1.file("checkpoint"))
    replaced = str(ROUND1.file("checkpoint"))
    with pytest.raises(UserError) as info:
        load_model(ROUND1.file("checkpoint"))  # explain, tcav
    assert one_line(info).startswith(f"{replaced} is not the checkpoint that ")
    assert f"delete {ROUND1.folder} and re-run" in one_line(info)
    with pytest.raises(UserError, match="is not the checkpoint that"):  # the next round
        train(ROUND1.at(round=2), Path("data.pt"), previous=ROUND1.file("checkpoint"))
    with pytest.raises(UserError, match="is not the checkpoint that"):  # a control of the round
        train(ROUND1.at(branch="randmask"), Path("data.pt"), ticket_checkpoint=ROUND1.file("checkpoint"))
    with pytest.raises(UserError) as info:  # the Snakefile's start-up check
        check_results(PARAMS)
    assert f"{replaced} is not the checkpoint that" in one_line(info)
    assert one_line(info).endswith(f"Delete {ROUND1.folder} and re-run (what depends on them is re-run too)")


def test_control_copied_with_its_metrics_is_refused_by_identity(study: Path) -> None:
    for name in ("checkpoint", "metrics"):
        shutil.copy2(REINIT1.file(name), ROUND1.file(name))
    with pytest.raises(UserError) as info:
        load_model(ROUND1.file("checkpoint"))
    assert one_line(info) == (
        f"{ROUND1.file('checkpoint')} holds toy seed 0 reinit round 1, not the checkpoint of toy seed 0 ticket "
        f"round 1: it was copied, moved or made by another version; delete {ROUND1.folder} and re-run"
    )
    with pytest.raises(
        UserError, match="holds toy seed 0 reinit round 1, not the metrics of toy seed 0 ticket"
    ):
        check_results(PARAMS)


def test_a_wrong_parent_is_refused_before_training(study: Path) -> None:
    with pytest.raises(UserError) as info:  # a control given the reinit checkpoint as its ticket
        train(ROUND1.at(branch="randmask"), Path("data.pt"), ticket_checkpoint=REINIT1.file("checkpoint"))
    assert "holds toy seed 0 reinit round 1, not the control's ticket, toy seed 0 ticket round 1" in one_line(
        info
    )
    with pytest.raises(UserError, match="not the checkpoint to prune, toy seed 0 ticket round 1"):
        train(ROUND1.at(round=2), Path("data.pt"), previous=DENSE.file("checkpoint"))
    assert not ROUND1.at(round=2).file("checkpoint").exists()


def test_a_replaced_parent_is_caught_at_start_up(study: Path, tmp_path: Path) -> None:
    # an older dense net of another run, copied with its metrics and old times over this study's one
    other = tmp_path / "other"
    os.makedirs(other)
    save_prepared(make_toy_data(seed=1), other / "data.pt")
    train_ticket(
        DENSE, other / "data.pt", TOY.model, TOY.model_width, TOY.training, TOY_PRUNING, *into(other / "t0")
    )
    for name in ("checkpoint", "metrics"):
        shutil.copy2(other / "t0" / DENSE.file(name).name, DENSE.file(name))
        os.utime(DENSE.file(name), ns=(1, 1))  # older than round 1: Snakemake would not re-run round 1
    with pytest.raises(UserError) as info:
        check_results(PARAMS)
    message = one_line(info)
    assert f"{ROUND1.folder} was trained from another toy seed 0 ticket round 0" in message
    # the control took its mask from round 1, which is fine: it is re-run once round 1 is retrained
    assert message.endswith(f"Delete {ROUND1.folder} and re-run (what depends on them is re-run too)")


def test_a_child_older_than_its_parent_is_left_to_snakemake(study: Path) -> None:
    """After an interrupted re-run the parent is new and the child old: Snakemake re-runs the child, so the
    start-up check must not ask for anything to be deleted."""
    faster = dataclasses.replace(TOY.training, lr=0.01)
    train_ticket(DENSE, Path("data.pt"), TOY.model, TOY.model_width, faster, TOY_PRUNING)  # killed after this
    metrics = json.loads(ROUND1.file("metrics").read_text())
    assert metrics["parent_sha256"] != fileio.file_sha256(DENSE.file("checkpoint"))
    check_results(PARAMS)


def test_maps_of_another_checkpoint_are_caught_unless_snakemake_redoes_them(study: Path) -> None:
    maps = ROUND1.file("saliency_maps")
    fileio.write_npz({"saliency": np.zeros((1, 2, 2)), "checkpoint_sha256": np.array("0" * 64)}, maps)
    with pytest.raises(UserError, match=f"{maps} explains another checkpoint than"):
        check_results(PARAMS)
    os.utime(maps, ns=(1, 1))  # older than the checkpoint: the explain job re-runs anyway
    check_results(PARAMS)


def test_results_of_an_older_version_are_refused(study: Path) -> None:
    def drop_hash(ticket: Ticket) -> None:
        metrics = json.loads(ticket.file("metrics").read_text())
        del metrics["checkpoint_sha256"]
        fileio.write_json(metrics, ticket.file("metrics"))

    drop_hash(ROUND1)
    with pytest.raises(UserError) as info:
        check_results(PARAMS)
    assert (
        f"{ROUND1.file('metrics')} records no checkpoint hash (written by an older ticketlens)"
        in one_line(info)
    )
    assert one_line(info).endswith(f"Delete {ROUND1.folder} and re-run (what depends on them is re-run too)")
    for ticket in (DENSE, REINIT1):  # a whole results tree of an older version: one folder to delete
        drop_hash(ticket)
    with pytest.raises(UserError) as info:
        check_results(PARAMS)
    assert one_line(info) == (
        "1 trained result(s) on disk are not what they claim to be: results/toy was written by an older "
        "ticketlens (no checkpoint hash). Delete results/toy and re-run (what depends on them is re-run too)"
    )


def test_the_hash_cache_skips_unchanged_files_but_not_a_cp_p_replacement(
    study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = study / ".snakemake" / "hashes.json"
    check_results(PARAMS, cache_path=cache)
    hashed: list[Path] = []
    real = startup.file_sha256
    monkeypatch.setattr(startup, "file_sha256", lambda path: hashed.append(path) or real(path))
    check_results(PARAMS, cache_path=cache)
    assert hashed == []  # a no-op start hashes nothing
    assert ROUND1.file("checkpoint").stat().st_size == REINIT1.file("checkpoint").stat().st_size
    stamp = ROUND1.file("checkpoint").stat()
    shutil.copy2(REINIT1.file("checkpoint"), ROUND1.file("checkpoint"))
    os.utime(ROUND1.file("checkpoint"), ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # same size and mtime
    with pytest.raises(UserError, match="is not the checkpoint that"):
        check_results(PARAMS, cache_path=cache)


def test_the_training_settings_stamp_follows_what_trained_the_tickets(study: Path) -> None:
    """Issue 22 item 1: metrics.json records the fingerprint of the settings that trained the ticket; the
    start-up rewrites train_settings.json (an input of every train_ticket job) newer than the checkpoints
    exactly when a ticket on disk was trained with other settings, else older than any result."""
    params = dataclasses.replace(PARAMS, datasets={"toy": TOY})
    stamp = study / startup.TRAIN_SETTINGS.format(dataset="toy")
    assert startup.stamp_train_settings(params, study) == []
    assert stamp.stat().st_mtime_ns == 0  # the results are the current settings': nothing re-runs
    assert startup.stamp_train_settings(params, study) == [] and stamp.stat().st_mtime_ns == 0
    faster = dataclasses.replace(TOY, training=dataclasses.replace(TOY.training, lr=0.004))
    changed = dataclasses.replace(PARAMS, datasets={"toy": faster})
    lines = startup.stamp_train_settings(changed, study)
    assert lines == [
        "results/toy: 3 trained ticket(s) were made with other training or pruning params than now (e.g. "
        "copied or pulled results): they are trained again, with what is made from them"
    ]
    assert stamp.stat().st_mtime_ns > DENSE.file("checkpoint").stat().st_mtime_ns
    assert startup.stamp_train_settings(changed, study) == []  # said once; the stamp stays newer
    assert stamp.stat().st_mtime_ns > DENSE.file("checkpoint").stat().st_mtime_ns
    assert startup.stamp_train_settings(params, study) == [] and stamp.stat().st_mtime_ns == 0  # back
