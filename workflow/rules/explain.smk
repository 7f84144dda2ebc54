# Explanations per ticket: saliency maps compared with the dense net and the previous round,
# the TCAV null (random vs random) with cached activations, then one TCAV table per concept.


def explain_inputs(wc):
    r = int(wc.round)
    inputs = {
        "checkpoint": TICKET_DIR.format(**wc) + "/checkpoint.pt",
        "data": f"results/{wc.dataset}/prepared/data.pt",
        "random": random_set_files(wc.dataset),
    }
    if r >= 1:
        dense = TICKET_DIR.format(**{**wc, "branch": "ticket", "round": 0})
        previous_branch = wc.branch if r >= 2 else "ticket"
        previous = TICKET_DIR.format(
            **{**wc, "branch": previous_branch, "round": r - 1}
        )
        inputs["dense"] = dense + "/saliency.npz"
        inputs["previous"] = previous + "/saliency.npz"
    return inputs


def parent_flag(flag, path):
    return optional_flag(flag, os.path.dirname(path) if path else None)


rule explain:
    input:
        unpack(explain_inputs),
    output:
        saliency=TICKET_DIR + "/saliency.npz",
        table=TICKET_DIR + "/saliency.csv",
        consistency=TICKET_DIR + "/consistency.csv",
        cache=TICKET_DIR + "/tcav/activations.pt",
        null=TICKET_DIR + "/tcav/random.csv",
    log:
        TICKET_DIR.replace("results/", "logs/") + "/explain.log",
    threads: THREADS
    params:
        config=lambda wc: explain_config(wc.dataset),
        links=lambda wc, input: " ".join(
            [
                parent_flag("--dense-dir", input.get("dense")),
                parent_flag("--previous-dir", input.get("previous")),
            ]
        ),
    shell:
        "ticketlens --log {log:q} explain --checkpoint {input.checkpoint:q} --data {input.data:q}"
        " --random {input.random:q} --config {params.config:q} {params.links}"
        " --out-dir $(dirname {output.saliency:q}) --threads {threads}"


rule tcav:
    input:
        checkpoint=TICKET_DIR + "/checkpoint.pt",
        concept="results/{dataset}/concepts/{concept}.pt",
        cache=TICKET_DIR + "/tcav/activations.pt",
    output:
        TICKET_DIR + "/tcav/{concept}.csv",
    log:
        TICKET_DIR.replace("results/", "logs/") + "/tcav_{concept}.log",
    threads: THREADS
    params:
        config=lambda wc: explain_config(wc.dataset),
    shell:
        "ticketlens --log {log:q} tcav --checkpoint {input.checkpoint:q} --concept {input.concept:q}"
        " --cache {input.cache:q} --config {params.config:q} --out {output:q} --threads {threads}"
