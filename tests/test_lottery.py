"""Lottery rounds: rewinding, controls, late rewinding, one-shot, determinism and in-round resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from conftest import TOY, TOY_PRUNING
from ticketlens import training
from ticketlens.lottery import load_checkpoint, load_model, train_ticket
from ticketlens.study import TICKET_FILES, PruningSettings, Ticket, TrainingSettings

CHECKPOINT, METRICS, RESUME = TICKET_FILES.checkpoint, TICKET_FILES.metrics, TICKET_FILES.resume


def run(
    path,
    out,
    branch="ticket",
    r=0,
    previous=None,
    ticket=None,
    seed=0,
    training: TrainingSettings = TOY.training,
    pruning: PruningSettings = TOY_PRUNING,
):
    return train_ticket(
        Ticket("toy", seed, branch, r),
        path,
        TOY.model,
        TOY.model_width,
        training,
        pruning,
        out,
        previous=previous,
        ticket_checkpoint=ticket,
    )


@pytest.fixture
def two_rounds(tmp_path, toy_data_path):
    run(toy_data_path, tmp_path / "t0")
    run(toy_data_path, tmp_path / "t1", r=1, previous=tmp_path / "t0" / CHECKPOINT)
    return tmp_path


def test_survivors_are_rewound_to_exactly_their_init(two_rounds, toy_data_path):
    dense = load_checkpoint(two_rounds / "t0" / CHECKPOINT)
    ticket = load_checkpoint(two_rounds / "t1" / CHECKPOINT)
    # The rewind state is the dense net's init, carried unchanged into every round.
    for key in dense["rewind_state"]:
        assert torch.equal(dense["rewind_state"][key], ticket["rewind_state"][key])
    # Re-train round 1 for zero iterations: what it starts from is init * mask.
    short = dataclasses.replace(TOY.training, iterations=1, eval_every=1)
    captured = {}
    original = training.train

    def spy(model, *args, **kwargs):
        captured.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return original(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ticketlens.lottery.train", spy)
        run(toy_data_path, two_rounds / "again", r=1, previous=two_rounds / "t0" / CHECKPOINT, training=short)
    for key, mask in ticket["masks"].items():
        start = (
            captured[key.replace("weight", "weight_orig")] * captured[key.replace("weight", "weight_mask")]
        )
        assert torch.equal(start, dense["rewind_state"][key] * mask)


def test_ticket_metrics_and_pruned_weights(two_rounds):
    metrics = json.loads((two_rounds / "t1" / METRICS).read_text())
    ticket = load_checkpoint(two_rounds / "t1" / CHECKPOINT)
    model = load_model(two_rounds / "t1" / CHECKPOINT)
    weights = dict(model.named_parameters())
    for key, mask in ticket["masks"].items():
        assert torch.all(weights[key][~mask] == 0)
        assert metrics["remaining_per_layer"][key] == pytest.approx(float(mask.float().mean()))
    assert metrics["early_stop_iteration"] in {p["iteration"] for p in metrics["val_curve"]}
    assert 0 < metrics["remaining_fraction"] < 1
    assert not (two_rounds / "t1" / RESUME).exists()


def test_controls_share_the_ticket_sparsity(two_rounds, toy_data_path):
    ticket_path = two_rounds / "t1" / CHECKPOINT
    run(toy_data_path, two_rounds / "reinit", branch="reinit", r=1, ticket=ticket_path)
    run(toy_data_path, two_rounds / "randmask", branch="randmask", r=1, ticket=ticket_path)
    ticket = load_checkpoint(ticket_path)
    reinit = load_checkpoint(two_rounds / "reinit" / CHECKPOINT)
    randmask = load_checkpoint(two_rounds / "randmask" / CHECKPOINT)
    for key, mask in ticket["masks"].items():
        assert torch.equal(reinit["masks"][key], mask)
        assert int(randmask["masks"][key].sum()) == int(mask.sum())
    assert any(not torch.equal(randmask["masks"][k], m) for k, m in ticket["masks"].items())
    # reinit draws a new init; randmask keeps the original one
    key = next(iter(ticket["masks"]))
    assert not torch.equal(reinit["rewind_state"][key], ticket["rewind_state"][key])
    assert torch.equal(randmask["rewind_state"][key], ticket["rewind_state"][key])


def test_same_params_give_bitwise_identical_masks_and_metrics(tmp_path, toy_data_path):
    for name in ("a", "b"):
        run(toy_data_path, tmp_path / name / "t0")
        run(
            toy_data_path,
            tmp_path / name / "t1",
            r=1,
            previous=tmp_path / name / "t0" / CHECKPOINT,
        )
    a, b = (load_checkpoint(tmp_path / n / "t1" / CHECKPOINT) for n in ("a", "b"))
    for key in a["masks"]:
        assert torch.equal(a["masks"][key], b["masks"][key])
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key])
    ma, mb = (json.loads((tmp_path / n / "t1" / METRICS).read_text()) for n in ("a", "b"))
    timing = {"train_seconds", "images_per_second"}
    assert {k: v for k, v in ma.items() if k not in timing} == {
        k: v for k, v in mb.items() if k not in timing
    }


def test_interrupted_round_resumes_to_the_same_result(tmp_path, toy_data_path):
    run(toy_data_path, tmp_path / "full")
    calls = {"n": 0}
    original = training.evaluate

    def crash_on_second_eval(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "evaluate", crash_on_second_eval)
        with pytest.raises(KeyboardInterrupt):
            run(toy_data_path, tmp_path / "crash")
    assert (tmp_path / "crash" / RESUME).exists() and not (tmp_path / "crash" / CHECKPOINT).exists()
    run(toy_data_path, tmp_path / "crash")
    full, resumed = (load_checkpoint(tmp_path / n / CHECKPOINT) for n in ("full", "crash"))
    for key in full["state_dict"]:
        assert torch.equal(full["state_dict"][key], resumed["state_dict"][key])


def test_late_rewinding_stores_iteration_k_and_restarts_there(tmp_path, toy_data_path):
    late = dataclasses.replace(TOY_PRUNING, rewind_iteration=10)
    run(toy_data_path, tmp_path / "t0", pruning=late)
    dense = load_checkpoint(tmp_path / "t0" / CHECKPOINT)
    torch.manual_seed(0)
    from ticketlens.lottery import seeded_init

    init = seeded_init(dense["model"], 0).state_dict()
    key = "features.conv1.weight"
    assert not torch.equal(dense["rewind_state"][key], init[key])  # k steps in, not the init
    metrics = run(toy_data_path, tmp_path / "t1", r=1, previous=tmp_path / "t0" / CHECKPOINT, pruning=late)
    assert metrics["start_iteration"] == 10
    assert not (tmp_path / "t0" / TICKET_FILES.rewind).exists()


def test_one_shot_prunes_dense_net_to_the_rounds_sparsity(tmp_path, toy_data_path):
    one_shot = dataclasses.replace(TOY_PRUNING, one_shot=True)
    run(toy_data_path, tmp_path / "t0", pruning=one_shot)
    metrics = run(
        toy_data_path, tmp_path / "t2", r=2, previous=tmp_path / "t0" / CHECKPOINT, pruning=one_shot
    )
    mask = load_checkpoint(tmp_path / "t2" / CHECKPOINT)["masks"]["classifier.fc1.weight"]
    assert int(mask.sum()) == mask.numel() - round((1 - 0.6**2) * mask.numel())
    assert metrics["round"] == 2


def test_controls_have_no_round_zero(tmp_path, toy_data_path):
    from ticketlens.errors import UserError

    with pytest.raises(UserError, match="controls start at round 1"):
        run(toy_data_path, tmp_path / "x", branch="reinit", r=0)
