# Shared helpers for the rule files: the study's expansion lists and the per-step JSON configs.
import json
import shlex

DATASETS = config["study"]["datasets"]
SEEDS = config["study"]["seeds"]
ROUNDS = config["study"]["rounds"]
CONTROLS = config["study"]["controls"]
THREADS = config["study"]["threads"]
N_RANDOM = config["explanations"]["tcav"]["n_random_sets"]
TICKET_DIR = "results/{dataset}/seed_{seed}/{branch}/round_{round}"


wildcard_constraints:
    dataset="[a-z0-9]+",
    seed=r"\d+",
    branch="ticket|reinit|randmask",
    round=r"\d+",
    concept=r"(?!random)[A-Za-z0-9_\-]+",  # random* names belong to the TCAV null and random sets
    i=r"\d+",


def concept_slug(name):
    return name.replace("::", "__")


def concept_slugs(dataset):
    return [concept_slug(c) for c in config["datasets"][dataset].get("concepts", [])]


def concept_name(dataset, slug):
    return {concept_slug(c): c for c in config["datasets"][dataset]["concepts"]}[slug]


def branch_rounds(branch):
    first = 0 if branch == "ticket" else 1
    return range(first, ROUNDS + 1)


def ticket_dirs(dataset):
    """Every ticket folder of a dataset: seeds x branches x rounds."""
    return [
        TICKET_DIR.format(dataset=dataset, seed=seed, branch=branch, round=r)
        for seed in SEEDS
        for branch in ["ticket", *CONTROLS]
        for r in branch_rounds(branch)
    ]


def random_set_files(dataset):
    return expand(
        "results/{dataset}/concepts/random_{i}.pt", dataset=dataset, i=range(N_RANDOM)
    )


def as_json(value):
    return json.dumps(value, sort_keys=True)


def train_config(dataset):
    """Only what changes a ticket, so editing e.g. concepts does not retrain."""
    data = {
        k: v
        for k, v in config["datasets"][dataset].items()
        if k not in ("concepts", "concept_options")
    }
    return as_json({"dataset": data, "pruning": config["pruning"]})


def explain_config(dataset):
    """What changes maps, concept sets and TCAV scores; the significance level only changes the summary."""
    tcav = {k: v for k, v in config["explanations"]["tcav"].items() if k != "alpha"}
    return as_json(
        {
            "dataset": dataset,
            "explanations": {**config["explanations"], "tcav": tcav},
            "concept_options": config["datasets"][dataset].get("concept_options", {}),
        }
    )


def optional_flag(flag, path):
    return f"{flag} {shlex.quote(str(path))}" if path else ""
