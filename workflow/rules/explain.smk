# Explanations per ticket: saliency maps compared with the dense net and the previous round;
# TCAV: one calibrated test table per concept, and the ticket's calibration (held-out random sets as concepts).


def explain_ticket_inputs(wc):
    ticket = ticket_of(wc)
    inputs = {
        "checkpoint": ticket.file("checkpoint"),
        "data": DatasetFiles(ticket.dataset).prepared_data,
    }
    if ticket.round > DENSE_ROUND:
        previous_branch = ticket.branch if ticket.round >= 2 else TICKET
        previous = ticket.at(branch=previous_branch, round=ticket.round - 1)
        inputs["dense"] = ticket.dense.file("saliency_maps")
        inputs["previous"] = previous.file("saliency_maps")
    return inputs


rule explain_ticket:
    input:
        unpack(explain_ticket_inputs),
    output:
        saliency=ticket_pattern("saliency_maps"),
        table=ticket_pattern("saliency_table"),
        consistency=ticket_pattern("consistency"),
    log:
        ticket_log_pattern("explain_ticket"),
    threads: STUDY.threads
    params:
        out_dir=lambda wc: ticket_of(wc).folder,
        device=STUDY.device,
        probe_per_class=PARAMS.explanations.probe_per_class,
        layer=optional_flag("--gradcam-layer", PARAMS.explanations.gradcam_layer),
        links=lambda wc, input: " ".join(
            [
                optional_flag("--dense", input.get("dense")),
                optional_flag("--previous", input.get("previous")),
            ]
        ),
    shell:
        "ticketlens --log {log:q} explain-ticket --checkpoint {input.checkpoint:q} --data {input.data:q}"
        " --probe-per-class {params.probe_per_class} {params.layer} {params.links}"
        " --out-dir {params.out_dir:q} --threads {threads} --device {params.device}"


rule tcav_null:
    input:
        checkpoint=ticket_pattern("checkpoint"),
        data=DATA.prepared_data,
        random=DATA.random_sets,
        calibration=DATA.calibration_sets,
    output:
        ticket_pattern("tcav_null"),
    log:
        ticket_log_pattern("tcav_null"),
    threads: STUDY.threads
    params:
        tcav=TCAV.to_json(),
        device=STUDY.device,
    shell:
        "ticketlens --log {log:q} tcav-null --checkpoint {input.checkpoint:q} --data {input.data:q}"
        " --random {input.random:q} --calibration {input.calibration:q} --tcav {params.tcav:q}"
        " --out {output:q} --threads {threads} --device {params.device}"


rule tcav_concept:
    input:
        checkpoint=ticket_pattern("checkpoint"),
        data=DATA.prepared_data,
        random=DATA.random_sets,
        concept=DATA.concept_set("{concept}"),
    output:
        ticket_pattern("tcav_concept"),
    log:
        ticket_log_pattern("tcav_{concept}"),
    threads: STUDY.threads
    params:
        tcav=TCAV.to_json(),
        device=STUDY.device,
    shell:
        "ticketlens --log {log:q} tcav-concept --checkpoint {input.checkpoint:q} --data {input.data:q}"
        " --random {input.random:q} --concept {input.concept:q} --tcav {params.tcav:q}"
        " --out {output:q} --threads {threads} --device {params.device}"
