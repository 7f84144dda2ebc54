# Lottery tickets: round 0 trains the dense net; ticket round r prunes round r-1 and rewinds;
# controls (reinit, randmask) take the ticket of the same round and change init or mask.


def train_inputs(wc):
    inputs = {"data": f"results/{wc.dataset}/prepared/data.pt"}
    r = int(wc.round)
    if wc.branch == "ticket" and r >= 1:
        parent = 0 if config["pruning"]["one_shot"] else r - 1
        inputs["previous"] = (
            TICKET_DIR.format(**{**wc, "round": parent}) + "/checkpoint.pt"
        )
    elif wc.branch != "ticket":
        inputs["ticket"] = (
            TICKET_DIR.format(**{**wc, "branch": "ticket"}) + "/checkpoint.pt"
        )
    return inputs


rule train:
    input:
        unpack(train_inputs),
    output:
        checkpoint=TICKET_DIR + "/checkpoint.pt",
        metrics=TICKET_DIR + "/metrics.json",
    log:
        TICKET_DIR.replace("results/", "logs/") + "/train.log",
    threads: THREADS
    params:
        config=lambda wc: train_config(wc.dataset),
        links=lambda wc, input: " ".join(
            [
                optional_flag("--previous", input.get("previous")),
                optional_flag("--ticket", input.get("ticket")),
            ]
        ),
    shell:
        "ticketlens --log {log:q} train --data {input.data:q} --dataset {wildcards.dataset:q}"
        " --seed {wildcards.seed} --branch {wildcards.branch} --round {wildcards.round}"
        " --config {params.config:q} {params.links} --out-dir $(dirname {output.checkpoint:q})"
        " --threads {threads}"
