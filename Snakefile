# ticketlens: lottery tickets, explained. Run with `snakemake --cores N` (see README.md).
import sys
from pathlib import Path

from ticketlens.config import ConfigError, validate_params


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
