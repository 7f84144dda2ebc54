# ticketlens: lottery tickets, explained. Run with `snakemake --cores N` (see README.md).
import os
import sys
from pathlib import Path

from ticketlens.config import ConfigError, read_params, study_params, validate_params
from ticketlens.errors import UserError
from ticketlens.runtime import kernels
from ticketlens.runtime.startup import (
    check_results,
    hash_cache_path,
    stamp_train_settings,
)

# Snakemake's own `configfile:` reader answers a params.yaml that is no mapping (a list, a string, a
# number) or no text with a WorkflowError or a traceback: read it first, for one line naming the problem.
try:
    read_params("params.yaml")
except ConfigError as err:
    sys.exit(f"ticketlens: {err}")


configfile: "params.yaml"


# Name --config / --configfile overrides in errors, so a bad override is not blamed on params.yaml.
SOURCE = "params.yaml" + (
    " with command-line overrides" if workflow.config_settings.overwrite_config else ""
)


try:
    config = validate_params(
        config, Path(workflow.basedir) / "workflow/schemas/params.schema.yaml", SOURCE
    )
except ConfigError as err:
    sys.exit(f"ticketlens: {err}")

# Every job's CPU kernels (study.kernels, ticketlens.runtime.kernels): each `ticketlens` command and the
# job server pin them from this variable, which local jobs, the job server and cluster jobs inherit.
os.environ[kernels.ENV] = config["study"]["kernels"]

# Snakemake decides re-runs by mtime: refuse to start while a trained ticket is not what its files record
# (e.g. a checkpoint replaced with `cp -p`). Jobs that a cluster runs as nested Snakemake calls skip it.
if workflow.is_main_process:
    try:
        # results without Snakemake's metadata (copied, pulled) made with other params are trained again
        for line in stamp_train_settings(study_params(config), Path(".")):
            print(f"ticketlens: {line}", file=sys.stderr)
        check_results(study_params(config), Path("."), hash_cache_path(Path(".")))
    except UserError as err:
        sys.exit(f"ticketlens: {err}")


# Jobs that run on this machine go through one job server that has torch imported (ticketlens.runtime.jobserver):
# most jobs do under a second of work and would otherwise spend 2-2.5 s each on imports.
# TICKETLENS_JOB_SERVER=off runs every job in its own process; cluster jobs always do.
onstart:
    if workflow.local_exec and not workflow.touch:
        from ticketlens.runtime.jobserver import start

        start(STUDY.threads, Path(".snakemake/ticketlens/job_server.log"))


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/lottery.smk"
include: "workflow/rules/explain.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/report.md",
        "results/metrics.json",
        study_artefacts,  # a deleted intermediate is made again (workflow/rules/common.smk)
