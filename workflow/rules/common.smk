# The study's shape for the rule files, all from ticketlens.study (the one vocabulary): typed settings,
# tickets and their lineage, branches; and the JSON of each rule's settings. Every rule spells the paths of
# its outputs (grep a file name under results/ to find the rule that writes it); study.py names the same
# files for the package (tests/workflow/test_rules.py keeps the two equal).
import functools

from ticketlens.config import study_params
from ticketlens.data.raw_files import raw_inputs
from ticketlens.study import BRANCHES, TICKET, DatasetFiles, Ticket, concept_slug

PARAMS = study_params(config)
STUDY = PARAMS.study
TCAV = PARAMS.explanations.tcav


wildcard_constraints:
    dataset="[a-z0-9]+",
    seed=r"\d+",
    branch="|".join(BRANCHES),
    round=r"\d+",
    concept=r"(?!random|calibration)[A-Za-z0-9_()\-]+",  # the random and calibration sets' names


def ticket_of(wc):
    return Ticket(wc.dataset, int(wc.seed), wc.branch, int(wc.round))


@functools.cache
def concept_names(dataset):
    """Slug -> concept name, built once per dataset rather than once per make_concept_set job."""
    return {concept_slug(c): c for c in PARAMS.datasets[dataset].concepts}


def concept_name(dataset, slug):
    return concept_names(dataset)[slug]


def concept_slugs(dataset):
    return [concept_slug(c) for c in PARAMS.datasets[dataset].concepts]


def optional_flag(flag, value):
    """`--flag 'value'` for an optional value (a path, a string or a list of strings), or nothing;
    every value is shell-quoted because it may come from config."""
    import shlex

    if not value:
        return ""
    values = [value] if isinstance(value, (str, Path)) else list(value)
    return " ".join([flag, *(shlex.quote(str(v)) for v in values)])


def concept_options_flag(dataset):
    options = PARAMS.datasets[dataset].concept_options
    return optional_flag("--options", options.to_json() if options else None)


def study_artefacts(wc):
    """Every intermediate file of the study, as inputs of rule `all`: a deleted one (a round folder, a
    concept set, data.pt) is made again by the next run, and so is everything made from it, which is then
    older than it (Snakemake only re-makes a missing intermediate that a job it runs anyway needs).
    """
    files = []
    for dataset in STUDY.datasets:
        data = DatasetFiles(dataset)
        files += [
            data.file(n)
            for n in (
                "prepared_data",
                "prepared_meta",
                "random_sets",
                "calibration_sets",
            )
        ]
        files += [data.file("concept_set", concept=s) for s in concept_slugs(dataset)]
        for ticket in STUDY.tickets(dataset):
            files += [
                ticket.file(n)
                for n in (
                    "checkpoint",
                    "metrics",
                    "saliency_maps",
                    "saliency_table",
                    "consistency",
                    "tcav_calibration",
                )
            ]
            files += [
                ticket.file("tcav_concept", concept=s) for s in concept_slugs(dataset)
            ]
    return files
