# Lottery tickets: round 0 trains the dense net; ticket round r prunes round r-1 (the dense net when
# one-shot) and rewinds; controls (reinit, randmask) take the ticket of the same round and change init or
# mask. The lineage is `Ticket.parent` (study.py).


def train_ticket_inputs(wc):
    ticket = ticket_of(wc)
    inputs = {
        "data": DatasetFiles(ticket.dataset).file("prepared_data"),
        # rewritten at start-up when tickets on disk were trained with other params (runtime/startup.py)
        "settings": f"results/{ticket.dataset}/train_settings.json",
    }
    parent = ticket.parent(PARAMS.pruning.one_shot)
    if parent is not None:
        role = "previous" if ticket.branch == TICKET else "ticket"
        inputs[role] = parent.file("checkpoint")
    return inputs


rule train_ticket:
    input:
        unpack(train_ticket_inputs),
    output:
        checkpoint="results/{dataset}/seed_{seed}/{branch}/round_{round}/checkpoint.pt",
        metrics="results/{dataset}/seed_{seed}/{branch}/round_{round}/metrics.json",
    log:
        "logs/{dataset}/seed_{seed}/{branch}/round_{round}/train_ticket.log",
    threads: STUDY.threads
    params:
        ticket=lambda wc: ticket_of(wc).name,
        device=STUDY.device,
        model=lambda wc: PARAMS.datasets[wc.dataset].model,
        width=lambda wc: PARAMS.datasets[wc.dataset].model_width,
        training=lambda wc: PARAMS.datasets[wc.dataset].training.to_json(),
        pruning=PARAMS.pruning.to_json(),
        kernels=STUDY.kernels,  # not in the command (the Snakefile exports it): a change re-trains
        links=lambda wc, input: " ".join(
            [
                optional_flag("--previous", input.get("previous")),
                optional_flag("--ticket-checkpoint", input.get("ticket")),
            ]
        ),
    shell:
        "ticketlens --log {log:q} train-ticket --ticket {params.ticket:q} --data {input.data:q}"
        " --model {params.model:q} --model-width {params.width} --training {params.training:q}"
        " --pruning {params.pruning:q} {params.links} --checkpoint {output.checkpoint:q}"
        " --metrics {output.metrics:q} --threads {threads} --device {params.device}"
