# Lottery tickets: round 0 trains the dense net; ticket round r prunes round r-1 and rewinds;
# controls (reinit, randmask) take the ticket of the same round and change init or mask.


def train_ticket_inputs(wc):
    ticket = ticket_of(wc)
    inputs = {"data": DatasetFiles(ticket.dataset).prepared_data}
    if ticket.branch == TICKET and ticket.round > DENSE_ROUND:
        parent = DENSE_ROUND if PARAMS.pruning.one_shot else ticket.round - 1
        inputs["previous"] = ticket.at(round=parent).file("checkpoint")
    elif ticket.branch != TICKET:
        inputs["ticket"] = ticket.at(branch=TICKET).file("checkpoint")
    return inputs


rule train_ticket:
    input:
        unpack(train_ticket_inputs),
    output:
        checkpoint=ticket_pattern("checkpoint"),
        metrics=ticket_pattern("metrics"),
    log:
        ticket_log_pattern("train_ticket"),
    threads: STUDY.threads
    params:
        out_dir=lambda wc: ticket_of(wc).folder,
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
        "ticketlens --log {log:q} train-ticket --data {input.data:q} --model {params.model:q}"
        " --model-width {params.width} --training {params.training:q} --pruning {params.pruning:q}"
        " {params.links} --out-dir {params.out_dir:q} --threads {threads}"
