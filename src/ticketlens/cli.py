"""The `ticketlens` console script: one subcommand per workflow rule, named like the rule and the function
it runs (rule `train_ticket` -> `ticketlens train-ticket` -> `ticketlens.lottery.rounds.train_ticket`).

`COMMANDS` is the whole mapping: subcommand -> function, and per flag the parameter it fills and how the
text becomes a value (a path, a list of paths, the JSON of a typed settings section of `ticketlens.study`).
Functions are imported only when their command runs, so `train-ticket` never pays for captum or
matplotlib. Every expected failure (bad data, bad params, a file that cannot be read or written) is one
line on stderr and in the `--log` file, exit 2, no traceback (`--debug` shows it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketlens import study
from ticketlens.errors import UserError
from ticketlens.runtime import kernels
from ticketlens.runtime.jobclient import run_on_server
from ticketlens.study import Ticket


def _settings(name: str) -> Callable[[str], Any]:
    """Converter for the JSON of a settings section: `--training '{"lr": ...}'` -> TrainingSettings."""

    def convert(text: str) -> Any:
        if not isinstance(json.loads(text), dict):
            raise ValueError(f"not a JSON object of {name}")
        return getattr(study, name).from_json(text)

    convert.__name__ = name
    return convert


def _count_or_all(text: str) -> int | None:
    """`--images-per-class 40` or `all` (None: every test image)."""
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"--images-per-class: got {text!r} (allowed: a positive integer or 'all')")
    return int(text)


def _ticket(folder: str) -> Ticket:
    return Ticket.from_folder(folder)


@dataclass(frozen=True)
class Arg:
    """One flag: the function parameter it fills, its converter and argparse keywords."""

    flag: str
    param: str | None = None  # None: the flag's own name (dashes -> underscores)
    convert: Callable[[Any], Any] | None = None
    options: dict[str, Any] = field(default_factory=lambda: {"required": True})


def _paths(values: list[str]) -> list[Path]:
    return [Path(v) for v in values]


PATHS = {"nargs": "+", "required": True}
OPTIONAL: dict[str, Any] = {}
THREADS = Arg("--threads", options={"type": int, "default": 1})
DEVICE = Arg("--device", options={"default": "auto", "help": "study.device: auto | cpu | cuda | cuda:N"})


@dataclass(frozen=True)
class Command:
    target: str  # "module:function"
    help: str
    args: tuple[Arg, ...]


COMMANDS: dict[str, Command] = {
    "check-params": Command("ticketlens.config:check_params", "validate a params file", (
        Arg("params", "paths", options={"nargs": "*", "default": ["params.yaml"],
                                        "help": "params.yaml, then presets merged over it in order"}),
        Arg("--schema", "schema_path", options={"default": "workflow/schemas/params.schema.yaml"}),
    )),
    "prepare-dataset": Command("ticketlens.data:prepare_dataset", "prepare a dataset into a cached tensor file", (
        Arg("--dataset", "name"), Arg("--settings", convert=_settings("DataSettings")), Arg("--out", convert=Path),
        Arg("--meta", convert=Path),
    )),
    "make-random-sets": Command("ticketlens.data.concepts:make_random_sets", "draw the R disjoint random image sets (and the calibration sets)", (
        Arg("--data", "data_path", Path), Arg("--n", options={"type": int, "required": True}),
        Arg("--size", options={"type": int, "required": True}), Arg("--seed", options={"type": int, "default": 0}),
        Arg("--n-calibration", options={"type": int, "required": True}), Arg("--out", convert=Path),
        Arg("--calibration-out", convert=Path),
    )),
    "make-concept-set": Command("ticketlens.data.concepts:make_concept_set", "the positive example set of one concept", (
        Arg("--data", "data_path", Path), Arg("--dataset"), Arg("--concept"),
        Arg("--size", "set_size", options={"type": int, "required": True}),
        Arg("--options", convert=_settings("ConceptOptions"), options={"help": "concept_options JSON (birds)"}),
        Arg("--random", "random_paths", _paths, PATHS), Arg("--out", convert=Path),
    )),
    "train-ticket": Command("ticketlens.lottery.rounds:train_ticket", "train one round of one branch (a ticket or a control)", (
        Arg("--data", "data_path", Path), Arg("--model"),
        Arg("--model-width", options={"type": float, "required": True}),
        Arg("--training", convert=_settings("TrainingSettings")),
        Arg("--pruning", convert=_settings("PruningSettings")),
        Arg("--previous", convert=Path, options={"help": "checkpoint this ticket round prunes"}),
        Arg("--ticket-checkpoint", convert=Path, options={"help": "the same round's ticket (controls)"}),
        Arg("--ticket", convert=_ticket, options={"required": True, "help": "{dataset}/seed_{s}/{branch}/round_{r}"}),
        Arg("--checkpoint", convert=Path), Arg("--metrics", convert=Path), THREADS, DEVICE,
    )),
    "explain-ticket": Command("ticketlens.explanations.explain:explain_ticket", "saliency maps and their comparisons", (
        Arg("--checkpoint", convert=Path), Arg("--data", "data_path", Path),
        Arg("--probe-per-class", options={"type": int, "required": True}),
        Arg("--gradcam-layer", options=OPTIONAL),
        Arg("--dense", "dense_maps", Path, {"help": "saliency.npz of the dense net of the same seed"}),
        Arg("--previous", "previous_maps", Path, {"help": "saliency.npz of the previous round"}),
        Arg("--saliency-maps", convert=Path), Arg("--saliency-table", convert=Path),
        Arg("--consistency", convert=Path), Arg("--outcomes", convert=Path), THREADS, DEVICE,
    )),
    "explain-images": Command("ticketlens.explanations.images:explain_images", "per-image maps of the explained test subset and their agreement with the dense net", (
        Arg("--checkpoint", convert=Path), Arg("--data", "data_path", Path),
        Arg("--images-per-class", convert=_count_or_all,
            options={"required": True, "help": "an integer, or `all` (every test image)"}),
        Arg("--gradcam-layer", options=OPTIONAL),
        Arg("--dense", "dense_maps", Path, {"help": "images.npz of the dense net of the same seed"}),
        Arg("--image-maps", convert=Path), Arg("--agreement", convert=Path), THREADS, DEVICE,
    )),
    "tcav-calibration": Command("ticketlens.explanations.tcav:tcav_calibration", "TCAV calibration: held-out random sets as concepts", (
        Arg("--checkpoint", convert=Path), Arg("--data", "data_path", Path),
        Arg("--random", "random_sets", Path), Arg("--calibration", "calibration_sets", Path),
        Arg("--tcav", convert=_settings("TcavSettings")), Arg("--out", convert=Path), THREADS, DEVICE,
    )),
    "tcav-concept": Command("ticketlens.explanations.tcav:tcav_concept", "calibrated TCAV test of one concept", (
        Arg("--checkpoint", convert=Path), Arg("--data", "data_path", Path),
        Arg("--random", "random_sets", Path), Arg("--concept", "concept_path", Path),
        Arg("--tcav", convert=_settings("TcavSettings")), Arg("--out", convert=Path), THREADS, DEVICE,
    )),
    "summarize-dataset": Command("ticketlens.analysis.summary:summarize_dataset", "tables and findings of one dataset", (
        Arg("--dataset"), Arg("--metrics", "ticket_metrics", _paths, PATHS),
        Arg("--saliency-tables", convert=_paths, options=PATHS),
        Arg("--consistency-tables", convert=_paths, options=PATHS),
        Arg("--saliency-maps", convert=_paths, options=PATHS),
        Arg("--calibration-tables", convert=_paths, options=PATHS),
        Arg("--outcome-tables", convert=_paths, options=PATHS),
        Arg("--agreement-tables", convert=_paths, options=PATHS),
        Arg("--concepts", options={"nargs": "*", "default": []}),
        Arg("--tcav-table-pattern", options={"required": True, "help": "rule tcav_concept's output pattern"}),
        Arg("--alpha", options={"type": float, "required": True, "help": "the TCAV significance level"}),
        Arg("--settings", convert=_settings("FindingsSettings"), options={"required": True, "help": "findings JSON"}),
        Arg("--summary", convert=Path), Arg("--aggregate", convert=Path), Arg("--tcav-summary", convert=Path),
        Arg("--findings", convert=Path), Arg("--metrics-out", "metrics", Path),
    )),
    "build-dataset-report": Command("ticketlens.report:build_dataset_report", "figures and report.md", (
        Arg("--dataset"), Arg("--summary", convert=Path), Arg("--tcav-summary", convert=Path),
        Arg("--findings", convert=Path), Arg("--data", convert=Path),
        Arg("--saliency", "saliency_maps", _paths, PATHS), Arg("--report", convert=Path),
        Arg("--figures", convert=Path),
        Arg("--image-maps", convert=_paths, options={"nargs": "*", "default": [],
                                                      "help": "the ticket branch's images.npz (forgetting gallery)"}),
    )),
    "build-study-report": Command("ticketlens.report:build_study_report", "the cross-dataset report", (
        Arg("--findings", convert=_paths, options=PATHS), Arg("--metrics", convert=_paths, options=PATHS),
        Arg("--reports", convert=_paths, options=PATHS), Arg("--report", convert=Path),
        Arg("--metrics-out", convert=Path), Arg("--summary-out", convert=Path),
    )),
    "readme-findings": Command("ticketlens.report.readme:readme_findings", "rewrite README's findings block from results/", (
        Arg("--readme", convert=Path, options={"default": "README.md"}),
        Arg("--results", convert=Path, options={"default": "results"}),
        Arg("--check", options={"action": "store_true", "help": "only compare; fail when the block differs"}),
    )),
    "verify": Command("ticketlens.report.verify:verify", "compare a finished study with the pinned one (git)", (
        Arg("--pinned", options={"default": "HEAD", "help": "git revision of the pinned study"}),
        Arg("--results", convert=Path, options={"default": "results"}),
    )),
    "data-check": Command("ticketlens.data.birds.check:check_data", "validate a CUB-200-2011 copy, print its counts", (
        Arg("--dataset", options={"choices": ["cub", "synthbirds"], "default": "cub"}),
        Arg("--root", convert=Path),
        Arg("--concepts", options={"nargs": "*", "default": None, "help": "concepts to count images for (default: cbm112 on CUB's vocabulary)"}),
        Arg("--min-certainty", options={"type": int, "default": 3, "help": "concept_options.min_certainty"}),
        Arg("--set-size", options={"type": int, "default": 100, "help": "explanations.tcav.set_size"}),
        Arg("--counts-out", convert=Path, options={"default": None, "help": "write the per-concept image counts (CSV)"}),
    )),
    "data-make-cub-like": Command("ticketlens.data.cub_like:make_cub_like", "write a CUB-shaped archive with known answers (200 classes, 312 attributes)", (
        Arg("--out", convert=Path, options={"required": True, "help": "folder to create (attributes.txt and CUB_200_2011/ inside)"}),
        Arg("--images-per-class", options={"default": "10", "help": "images per class, or 'cub' for CUB's 11,788"}),
        Arg("--image-size", options={"type": int, "default": 64, "help": "pixels of the shorter side (about)"}),
        Arg("--seed", options={"type": int, "default": 0}),
    )),
}  # fmt: skip
# `ticketlens data <sub>` spells these commands (the documented form)
DATA_COMMANDS = {"check": "data-check", "make-cub-like": "data-make-cub-like"}


def _param(arg: Arg) -> str:
    return arg.param or arg.flag.lstrip("-").replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketlens", description=__doc__.splitlines()[0])
    parser.add_argument("--log", help="also write log lines (and a failure's error line) to this file")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help)
        for arg in command.args:
            positional = not arg.flag.startswith("-")
            p.add_argument(arg.flag, **({} if positional else {"dest": _param(arg)}), **arg.options)
    # `ticketlens data check` is the documented spelling of `data-check` (DATA_COMMANDS).
    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for spelling, name in DATA_COMMANDS.items():
        p = data_sub.add_parser(spelling, help=COMMANDS[name].help)
        for arg in COMMANDS[name].args:
            p.add_argument(arg.flag, dest=_param(arg), **arg.options)
    return parser


def _converted(arg: Arg, value: Any) -> Any:
    """The flag's value as its function takes it; text that does not convert (bad JSON, a settings
    section with missing or unknown keys, a ticket folder of another shape) is one line naming the flag."""
    if arg.convert is None or value is None:
        return value
    try:
        return arg.convert(value)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        shown = value if len(str(value)) <= 120 else f"{str(value)[:117]}..."
        raise UserError(f"{arg.flag} {shown!r}: {err}") from None


def run_command(name: str, args: argparse.Namespace) -> Any:
    """Import the command's function and call it with the converted arguments."""
    command = COMMANDS[name]
    module, function = command.target.split(":")
    kwargs = {}
    for arg in command.args:
        value = getattr(args, _param(arg) if arg.flag.startswith("-") else arg.flag)
        kwargs[_param(arg)] = _converted(arg, value)
    target = getattr(importlib.import_module(module), function)
    kernels.configure_torch()  # the module has imported torch, if the command uses it
    return target(**kwargs)


def _setup_logging(log_file: str | None) -> None:
    import logging

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", handlers=handlers)
    # main() prints errors to stderr itself; this logger copies them into the --log file only, so that
    # a failed job's message is in the rule's log even where stderr goes elsewhere (SLURM job logs).
    errors = logging.getLogger("ticketlens.errors")
    errors.propagate = False
    errors.handlers = handlers[1:] or [logging.NullHandler()]


def _describe(err: BaseException) -> str:
    """One line naming the file and what happened, for errors the user can act on."""
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or type(err).__name__}"
    return str(err)


def main() -> int:
    """The console script: on a workstation job server (torch already imported) when one runs, else here.
    The CPU kernels are pinned first, before anything can import torch (runtime.kernels)."""
    try:
        kernels.pin_environment()
    except UserError as err:
        print(f"ticketlens: error: {err}", file=sys.stderr)
        return 2
    code = run_on_server(sys.argv)
    return run(sys.argv[1:]) if code is None else code


def run(argv: list[str]) -> int:
    """`ticketlens argv` in this process (the job server's children and the tests call this)."""
    import logging

    args = build_parser().parse_args(argv)
    name = DATA_COMMANDS[args.data_command] if args.command == "data" else args.command
    _setup_logging(args.log)
    errors = logging.getLogger("ticketlens.errors")
    try:
        result = run_command(name, args)
    except (UserError, OSError) as err:
        message = f"ticketlens {name}: error: {_describe(err)}"
        print(message, file=sys.stderr)
        errors.error(message)
        if args.debug:
            raise
        return 2
    except Exception:
        errors.exception(f"ticketlens {name}: unexpected error")
        raise
    return result if type(result) is int else 0  # a command that answers yes/no (verify) returns its status


if __name__ == "__main__":
    sys.exit(main())
