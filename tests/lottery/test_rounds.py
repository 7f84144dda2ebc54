"""Lottery rounds: rewinding, controls, late rewinding, one-shot, determinism and in-round resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from helpers import TOY, TOY_PRUNING, into, make_toy_data
from ticketlens.data.prepared import save_prepared
from ticketlens.lottery import training
from ticketlens.lottery.rounds import load_checkpoint, load_model, train_ticket
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
        *into(out),
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
        mp.setattr("ticketlens.lottery.rounds.train", spy)
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


def crash_midway(path, out, crash_at_eval=2, **kwargs):
    """Run a round and kill it at an evaluation (by default the second: iteration 40 with the toy settings,
    after resume.pt of iteration 20 was written)."""
    calls = {"n": 0}
    original = training.evaluate

    def crash_on_second_eval(*args, **kw):
        calls["n"] += 1
        if calls["n"] == crash_at_eval:
            raise KeyboardInterrupt("simulated crash")
        return original(*args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "evaluate", crash_on_second_eval)
        with pytest.raises(KeyboardInterrupt):
            run(path, out, **kwargs)
    assert (out / RESUME).exists() and not (out / CHECKPOINT).exists()


def assert_same_round(a, b):
    """Two round folders hold bitwise the same checkpoint weights, masks and rewind state, and metrics."""
    ca, cb = (load_checkpoint(folder / CHECKPOINT) for folder in (a, b))
    for part in ("state_dict", "masks", "rewind_state"):
        assert ca[part].keys() == cb[part].keys()
        for key in ca[part]:
            assert torch.equal(ca[part][key], cb[part][key]), (part, key)
    ma, mb = (json.loads((folder / METRICS).read_text()) for folder in (a, b))
    timing = {"train_seconds", "images_per_second"}
    assert {k: v for k, v in ma.items() if k not in timing} == {
        k: v for k, v in mb.items() if k not in timing
    }


def test_interrupted_round_resumes_to_the_same_result(tmp_path, toy_data_path, caplog):
    run(toy_data_path, tmp_path / "full")
    crash_midway(toy_data_path, tmp_path / "crash")
    with caplog.at_level("INFO", logger="ticketlens.lottery.training"):
        run(toy_data_path, tmp_path / "crash")
    assert "resumed from" in caplog.text and "at iteration 20" in caplog.text
    assert_same_round(tmp_path / "full", tmp_path / "crash")


def test_resume_saved_before_an_lr_change_is_discarded(tmp_path, toy_data_path, caplog):
    crash_midway(toy_data_path, tmp_path / "t0")  # lr 0.003
    faster = dataclasses.replace(TOY.training, lr=0.01)
    with caplog.at_level("INFO", logger="ticketlens.lottery.training"):
        run(toy_data_path, tmp_path / "t0", training=faster)
    assert "resumed from" not in caplog.text
    assert "discarding" in caplog.text and "training.lr 0.003 -> 0.01" in caplog.text
    run(toy_data_path, tmp_path / "fresh", training=faster)
    assert_same_round(tmp_path / "t0", tmp_path / "fresh")


def test_resume_saved_before_a_pruning_rate_change_is_discarded(tmp_path, toy_data_path, caplog):
    run(toy_data_path, tmp_path / "t0")
    previous = tmp_path / "t0" / CHECKPOINT
    crash_midway(toy_data_path, tmp_path / "t1", r=1, previous=previous)  # rate_fc 0.4
    harder = dataclasses.replace(TOY_PRUNING, rate_fc=0.7)
    with caplog.at_level("INFO", logger="ticketlens.lottery.training"):
        run(toy_data_path, tmp_path / "t1", r=1, previous=previous, pruning=harder)
    assert "pruning.rate_fc 0.4 -> 0.7" in caplog.text
    run(toy_data_path, tmp_path / "fresh", r=1, previous=previous, pruning=harder)
    assert_same_round(tmp_path / "t1", tmp_path / "fresh")


def test_resume_saved_from_another_parent_is_discarded(tmp_path, toy_data_path, caplog):
    run(toy_data_path, tmp_path / "t0")
    crash_midway(toy_data_path, tmp_path / "t1", r=1, previous=tmp_path / "t0" / CHECKPOINT)
    # the dense net is retrained differently: round 1 must not continue from the old parent's pruning
    run(toy_data_path, tmp_path / "t0", training=dataclasses.replace(TOY.training, lr=0.01))
    with caplog.at_level("INFO", logger="ticketlens.lottery.training"):
        run(toy_data_path, tmp_path / "t1", r=1, previous=tmp_path / "t0" / CHECKPOINT)
    assert "parent_sha256" in caplog.text and "resumed from" not in caplog.text
    run(toy_data_path, tmp_path / "fresh", r=1, previous=tmp_path / "t0" / CHECKPOINT)
    assert_same_round(tmp_path / "t1", tmp_path / "fresh")


def test_late_rewind_weights_of_a_discarded_run_are_not_reused(tmp_path, toy_data_path):
    late = dataclasses.replace(TOY_PRUNING, rewind_iteration=10)
    crash_midway(toy_data_path, tmp_path / "t0", pruning=late)  # rewind.pt captured at iteration 10
    assert (tmp_path / "t0" / TICKET_FILES.rewind).exists()
    faster = dataclasses.replace(TOY.training, lr=0.01)
    run(toy_data_path, tmp_path / "t0", pruning=late, training=faster)
    run(toy_data_path, tmp_path / "fresh", pruning=late, training=faster)
    assert_same_round(tmp_path / "t0", tmp_path / "fresh")


def test_late_rewinding_stores_iteration_k_and_restarts_there(tmp_path, toy_data_path):
    late = dataclasses.replace(TOY_PRUNING, rewind_iteration=10)
    run(toy_data_path, tmp_path / "t0", pruning=late)
    dense = load_checkpoint(tmp_path / "t0" / CHECKPOINT)
    torch.manual_seed(0)
    from ticketlens.lottery.rounds import seeded_init

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


def test_divergence_stops_in_one_line_and_leaves_nothing_to_resume(tmp_path, toy_data_path):
    from ticketlens.errors import UserError

    # SGD at lr 1e9 gives a nan loss at step 3: after resume.pt (every step) and rewind.pt (k = 1) exist
    wild = dataclasses.replace(TOY.training, optimizer="sgd", lr=1e9, checkpoint_every=1)
    late = dataclasses.replace(TOY_PRUNING, rewind_iteration=1)
    out = tmp_path / "t0"
    with pytest.raises(UserError) as info:
        run(toy_data_path, out, training=wild, pruning=late)
    assert str(info.value) == (
        "training diverged at iteration 3: loss nan (allowed: a finite loss at every step; "
        "lower datasets.toy.training.lr, now 1e+09)"
    )
    assert list(out.iterdir()) == []  # no checkpoint, metrics, resume.pt or rewind.pt


def test_cli_train_divergence_exits_2(tmp_path, toy_data_path, capsys, monkeypatch):
    from ticketlens.cli import run

    monkeypatch.chdir(tmp_path)
    wild = dataclasses.replace(TOY.training, optimizer="sgd", lr=1e9)
    ticket = Ticket("toy", 0, "ticket", 0)
    args = ["train-ticket", "--data", str(toy_data_path), "--model", TOY.model, "--model-width", "0.5"]
    args += ["--training", wild.to_json(), "--pruning", TOY_PRUNING.to_json(), "--ticket", ticket.name]
    args += ["--checkpoint", str(ticket.file("checkpoint")), "--metrics", str(ticket.file("metrics"))]
    assert run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ticketlens train-ticket: error: training diverged at iteration ")
    assert not (ticket.folder / CHECKPOINT).exists()


@pytest.fixture
def noisy_data_path(tmp_path):
    """The toy data with a third of the labels shuffled: losses stay well above zero and vary."""
    data = make_toy_data()
    generator = torch.Generator().manual_seed(0)
    flip = torch.rand(len(data.labels), generator=generator) < 0.33
    data.labels[flip] = torch.randint(0, 4, (int(flip.sum()),), generator=generator)
    path = tmp_path / "noisy.pt"
    save_prepared(data, path)
    return path


def test_test_accuracy_at_the_early_stop_iteration(tmp_path, noisy_data_path):
    """test_at early_stop reports the test loss of the weights at minimum validation loss: those of a run
    that stops there."""
    toy_data_path = noisy_data_path
    longer = dataclasses.replace(TOY.training, iterations=60, eval_every=10, test_at="early_stop")
    early = run(toy_data_path, tmp_path / "early", training=longer)
    stop = early["early_stop_iteration"]
    assert early["test_at"] == "early_stop" and early["test_iteration"] == stop < 60
    at_end = run(toy_data_path, tmp_path / "end", training=dataclasses.replace(longer, test_at="end"))
    assert at_end["test_at"] == "end" and at_end["test_iteration"] == 60
    short = dataclasses.replace(longer, iterations=stop, test_at="end")
    stopped = run(toy_data_path, tmp_path / "stopped", training=short)
    assert early["test_loss"] == stopped["test_loss"] != at_end["test_loss"]
    assert early["test_accuracy"] == stopped["test_accuracy"]
    # the checkpoint keeps the last weights: they are what the next round prunes and what is explained
    assert_same_round_weights(tmp_path / "early", tmp_path / "end")


def assert_same_round_weights(a, b):
    ca, cb = (load_checkpoint(folder / CHECKPOINT) for folder in (a, b))
    for key in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][key], cb["state_dict"][key]), key


def test_early_stop_weights_survive_a_resume(tmp_path, noisy_data_path):
    often = dataclasses.replace(
        TOY.training, iterations=60, eval_every=10, checkpoint_every=10, test_at="early_stop"
    )
    full = run(noisy_data_path, tmp_path / "full", training=often)
    assert full["early_stop_iteration"] == 40  # the minimum comes before the crash at iteration 50
    crash_midway(noisy_data_path, tmp_path / "crash", crash_at_eval=5, training=often)
    run(noisy_data_path, tmp_path / "crash", training=often)
    assert_same_round(tmp_path / "full", tmp_path / "crash")


def test_reinit_control_trains_from_the_rewind_step_like_the_ticket(tmp_path, toy_data_path):
    late = dataclasses.replace(TOY_PRUNING, rewind_iteration=10)
    run(toy_data_path, tmp_path / "t0", pruning=late)
    ticket = run(toy_data_path, tmp_path / "t1", r=1, previous=tmp_path / "t0" / CHECKPOINT, pruning=late)
    kwargs = {"r": 1, "ticket": tmp_path / "t1" / CHECKPOINT, "pruning": late}
    reinit = run(toy_data_path, tmp_path / "reinit", branch="reinit", **kwargs)
    randmask = run(toy_data_path, tmp_path / "randmask", branch="randmask", **kwargs)
    assert ticket["start_iteration"] == reinit["start_iteration"] == randmask["start_iteration"] == 10
    # the re-init control stores its own fresh init to rewind to, not the ticket's iteration-10 weights
    stored = load_checkpoint(tmp_path / "reinit" / CHECKPOINT)["rewind_state"]
    from ticketlens.lottery.rounds import init_seed, seeded_init

    spec = load_checkpoint(tmp_path / "reinit" / CHECKPOINT)["model"]
    fresh = seeded_init(spec, init_seed(0, "reinit", 1)).state_dict()
    assert all(torch.equal(stored[key], fresh[key]) for key in fresh)


@pytest.mark.slow
def test_augmented_round_resumes_to_the_same_bytes_and_differs_from_plain(tmp_path, toy_data_path):
    """training.augment draws from (seed, iteration): a resumed round and a re-run are the same bytes."""
    run(toy_data_path, tmp_path / "full", training=dataclasses.replace(TOY.training, augment="crop_flip"))
    crash_midway(
        toy_data_path, tmp_path / "crash", training=dataclasses.replace(TOY.training, augment="crop_flip")
    )
    run(toy_data_path, tmp_path / "crash", training=dataclasses.replace(TOY.training, augment="crop_flip"))
    assert_same_round(tmp_path / "full", tmp_path / "crash")
    run(toy_data_path, tmp_path / "again", training=dataclasses.replace(TOY.training, augment="crop_flip"))
    assert (tmp_path / "full" / CHECKPOINT).read_bytes() == (tmp_path / "again" / CHECKPOINT).read_bytes()
    run(toy_data_path, tmp_path / "plain")
    plain, augmented = (load_checkpoint(tmp_path / f / CHECKPOINT) for f in ("plain", "full"))
    key = next(iter(plain["masks"]))
    assert not torch.equal(plain["state_dict"][key], augmented["state_dict"][key])


def test_train_ticket_writes_where_it_is_told_and_nothing_under_the_current_folder(
    tmp_path, toy_data_path, capsys, monkeypatch
):
    """Issue 22 item 10: a ticket trained for another study folder (`--ticket` given as that folder)
    writes its checkpoint, metrics and in-round files there, never under ./results of the current folder;
    the old `--out-dir` flag is refused in one line rather than ignored."""
    from ticketlens.cli import run

    here, elsewhere = (
        tmp_path / "here",
        tmp_path / "elsewhere" / "results" / "toy" / "seed_0" / "ticket" / "round_0",
    )
    here.mkdir()
    monkeypatch.chdir(here)
    args = ["train-ticket", "--data", str(toy_data_path), "--model", TOY.model, "--model-width", "0.5"]
    args += [
        "--training",
        TOY.training.to_json(),
        "--pruning",
        TOY_PRUNING.to_json(),
        "--ticket",
        str(elsewhere),
    ]
    outputs = ["--checkpoint", str(elsewhere / CHECKPOINT), "--metrics", str(elsewhere / "metrics.json")]
    with pytest.raises(SystemExit) as info:
        run([*args, "--out-dir", str(elsewhere)])
    assert info.value.code == 2 and "--checkpoint, --metrics" in capsys.readouterr().err
    assert run([*args, *outputs]) == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == [CHECKPOINT, "metrics.json"]
    assert list(here.iterdir()) == []
    assert load_checkpoint(elsewhere / CHECKPOINT)["seed"] == 0
