"""The `ticketlens` console script: one subcommand per workflow step.

Imports are lazy so that e.g. `ticketlens train` never pays for captum or matplotlib.
Every handler turns expected failures (bad data, bad params) into one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ticketlens.errors import UserError


def _json_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _cmd_prepare(args: argparse.Namespace) -> None:
    from ticketlens.data import prepare_dataset

    prepare_dataset(args.dataset, args.config, Path(args.out))


def _cmd_data_check(args: argparse.Namespace) -> None:
    from ticketlens.data.cub import check_cub

    print(check_cub(Path(args.root)))


def _cmd_random_sets(args: argparse.Namespace) -> None:
    from ticketlens.data.concepts import make_random_sets

    make_random_sets(Path(args.data), args.n, args.size, args.seed, [Path(p) for p in args.out])


def _cmd_concept(args: argparse.Namespace) -> None:
    from ticketlens.data.concepts import make_concept_set

    make_concept_set(
        Path(args.data), args.concept, args.config, [Path(p) for p in args.random], Path(args.out)
    )


def _cmd_train(args: argparse.Namespace) -> None:
    from ticketlens.lottery import run_round

    run_round(
        data_path=Path(args.data),
        dataset=args.dataset,
        seed=args.seed,
        branch=args.branch,
        round_index=args.round,
        config=args.config,
        out_dir=Path(args.out_dir),
        previous=Path(args.previous) if args.previous else None,
        ticket=Path(args.ticket) if args.ticket else None,
        threads=args.threads,
    )


def _cmd_explain(args: argparse.Namespace) -> None:
    from ticketlens.explanations import explain_ticket

    explain_ticket(
        checkpoint=Path(args.checkpoint),
        data_path=Path(args.data),
        random_sets=[Path(p) for p in args.random],
        config=args.config,
        out_dir=Path(args.out_dir),
        dense_dir=Path(args.dense_dir) if args.dense_dir else None,
        previous_dir=Path(args.previous_dir) if args.previous_dir else None,
        threads=args.threads,
    )


def _cmd_tcav(args: argparse.Namespace) -> None:
    from ticketlens.explanations.tcav import tcav_concept

    tcav_concept(
        checkpoint=Path(args.checkpoint),
        concept_path=Path(args.concept),
        cache_path=Path(args.cache),
        config=args.config,
        out=Path(args.out),
        threads=args.threads,
    )


def _cmd_summarize(args: argparse.Namespace) -> None:
    from ticketlens.analysis import summarize_dataset

    summarize_dataset(args.dataset, Path(args.results), args.config)


def _cmd_report(args: argparse.Namespace) -> None:
    from ticketlens.report import build_dataset_report

    build_dataset_report(args.dataset, Path(args.results), args.config)


def _cmd_report_all(args: argparse.Namespace) -> None:
    from ticketlens.report import build_study_report

    build_study_report([Path(p) for p in args.datasets], Path(args.out_dir))


def _cmd_check_params(args: argparse.Namespace) -> None:
    from ticketlens.config import load_params

    load_params(args.params, args.schema)
    print(f"{args.params}: valid")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketlens", description=__doc__.splitlines()[0])
    parser.add_argument("--log", help="also write log lines to this file")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(handler=handler)
        return p

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=_json_arg, required=True, help="JSON object of the validated params")

    p = command("check-params", _cmd_check_params, "validate a params file")
    p.add_argument("params", nargs="?", default="params.yaml")
    p.add_argument("--schema", default="workflow/schemas/params.schema.yaml")

    p = command("prepare", _cmd_prepare, "prepare a dataset into a cached tensor file")
    p.add_argument("--dataset", required=True)
    with_config(p)
    p.add_argument("--out", required=True)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("check", help="validate a CUB-200-2011 copy and print its counts")
    p.set_defaults(handler=_cmd_data_check)
    p.add_argument("--dataset", choices=["cub", "synthbirds"], default="cub")
    p.add_argument("--root", required=True)

    p = command("random-sets", _cmd_random_sets, "draw the R disjoint random image sets for TCAV")
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", nargs="+", required=True)

    p = command("concept", _cmd_concept, "build the positive example set of one concept")
    p.add_argument("--data", required=True)
    p.add_argument("--concept", required=True)
    with_config(p)
    p.add_argument("--random", nargs="+", required=True, help="random set files to stay disjoint from")
    p.add_argument("--out", required=True)

    p = command("train", _cmd_train, "train one round of one branch (a ticket or a control)")
    p.add_argument("--data", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--branch", choices=["ticket", "reinit", "randmask"], required=True)
    p.add_argument("--round", type=int, required=True)
    with_config(p)
    p.add_argument("--previous", help="checkpoint of the round this one prunes from (ticket, round >= 1)")
    p.add_argument("--ticket", help="ticket checkpoint of the same round (controls)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1)

    p = command("explain", _cmd_explain, "saliency maps, their comparisons and the TCAV null for one ticket")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--random", nargs="+", required=True)
    with_config(p)
    p.add_argument("--dense-dir", help="round-0 folder of the same seed (absent for the dense net itself)")
    p.add_argument("--previous-dir", help="previous round's folder of the same branch")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1)

    p = command("tcav", _cmd_tcav, "TCAV scores of one concept for one ticket")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--concept", required=True)
    p.add_argument("--cache", required=True, help="tcav/activations.pt of the same ticket")
    with_config(p)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)

    p = command("summarize", _cmd_summarize, "tables and findings for one dataset")
    p.add_argument("--dataset", required=True)
    p.add_argument("--results", required=True, help="results/{dataset}")
    with_config(p)

    p = command("report", _cmd_report, "figures and report.md for one dataset")
    p.add_argument("--dataset", required=True)
    p.add_argument("--results", required=True)
    with_config(p)

    p = command("report-all", _cmd_report_all, "the cross-dataset report and metrics")
    p.add_argument("--datasets", nargs="+", required=True, help="results/{dataset} folders")
    p.add_argument("--out-dir", required=True)
    return parser


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


def main(argv: list[str] | None = None) -> int:
    import logging

    args = build_parser().parse_args(argv)
    _setup_logging(args.log)
    errors = logging.getLogger("ticketlens.errors")
    try:
        args.handler(args)
    except (UserError, FileNotFoundError) as err:
        message = f"ticketlens {args.command}: error: {err}"
        print(message, file=sys.stderr)
        errors.error(message)
        return 2
    except Exception:
        errors.exception(f"ticketlens {args.command}: unexpected error")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
