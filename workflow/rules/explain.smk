# Explanations per ticket: saliency maps compared with the dense net and the previous round;
# TCAV: one calibrated test table per concept, and the ticket's calibration (held-out random sets run
# through the same test as concepts).


def explain_ticket_inputs(wc):
    ticket = ticket_of(wc)
    inputs = {
        "checkpoint": ticket.file("checkpoint"),
        "data": DatasetFiles(ticket.dataset).file("prepared_data"),
    }
    if ticket.previous is not None:
        inputs["dense"] = ticket.dense.file("saliency_maps")
        inputs["previous"] = ticket.previous.file("saliency_maps")
    return inputs


rule explain_ticket:
    input:
        unpack(explain_ticket_inputs),
    output:
        saliency_maps="results/{dataset}/seed_{seed}/{branch}/round_{round}/saliency.npz",
        saliency_table="results/{dataset}/seed_{seed}/{branch}/round_{round}/saliency.csv",
        consistency="results/{dataset}/seed_{seed}/{branch}/round_{round}/consistency.csv",
        outcomes="results/{dataset}/seed_{seed}/{branch}/round_{round}/outcomes.csv",
    log:
        "logs/{dataset}/seed_{seed}/{branch}/round_{round}/explain_ticket.log",
    threads: STUDY.threads
    params:
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
        " --saliency-maps {output.saliency_maps:q} --saliency-table {output.saliency_table:q}"
        " --consistency {output.consistency:q} --outcomes {output.outcomes:q}"
        " --threads {threads} --device {params.device}"


def explain_images_inputs(wc):
    ticket = ticket_of(wc)
    inputs = {
        "checkpoint": ticket.file("checkpoint"),
        "data": DatasetFiles(ticket.dataset).file("prepared_data"),
    }
    if not ticket.is_dense:
        inputs["dense"] = ticket.dense.file("image_maps")
    return inputs


# Per-image agreement with the dense net on a stratified subset of test images (the forgetting analysis);
# the summary asks for it on the ticket branch only.
rule explain_images:
    input:
        unpack(explain_images_inputs),
    output:
        image_maps="results/{dataset}/seed_{seed}/{branch}/round_{round}/images.npz",
        agreement="results/{dataset}/seed_{seed}/{branch}/round_{round}/agreement.csv",
    log:
        "logs/{dataset}/seed_{seed}/{branch}/round_{round}/explain_images.log",
    threads: STUDY.threads
    params:
        device=STUDY.device,
        images_per_class=PARAMS.explanations.images_per_class or "all",
        layer=optional_flag("--gradcam-layer", PARAMS.explanations.gradcam_layer),
        dense=lambda wc, input: optional_flag("--dense", input.get("dense")),
    shell:
        "ticketlens --log {log:q} explain-images --checkpoint {input.checkpoint:q} --data {input.data:q}"
        " --images-per-class {params.images_per_class} {params.layer} {params.dense}"
        " --image-maps {output.image_maps:q} --agreement {output.agreement:q}"
        " --threads {threads} --device {params.device}"


rule tcav_calibration:
    input:
        checkpoint=rules.train_ticket.output.checkpoint,
        data=rules.prepare_dataset.output.data,
        random=rules.make_random_sets.output.random,
        calibration=rules.make_random_sets.output.calibration,
    output:
        "results/{dataset}/seed_{seed}/{branch}/round_{round}/tcav/calibration.csv",
    log:
        "logs/{dataset}/seed_{seed}/{branch}/round_{round}/tcav_calibration.log",
    threads: STUDY.threads
    params:
        tcav=TCAV.to_json(),
        device=STUDY.device,
    shell:
        "ticketlens --log {log:q} tcav-calibration --checkpoint {input.checkpoint:q} --data {input.data:q}"
        " --random {input.random:q} --calibration {input.calibration:q} --tcav {params.tcav:q}"
        " --out {output:q} --threads {threads} --device {params.device}"


rule tcav_concept:
    input:
        checkpoint=rules.train_ticket.output.checkpoint,
        data=rules.prepare_dataset.output.data,
        random=rules.make_random_sets.output.random,
        concept=rules.make_concept_set.output,
    output:
        "results/{dataset}/seed_{seed}/{branch}/round_{round}/tcav/{concept}.csv",
    log:
        "logs/{dataset}/seed_{seed}/{branch}/round_{round}/tcav_{concept}.log",
    threads: STUDY.threads
    params:
        tcav=TCAV.to_json(),
        device=STUDY.device,
    shell:
        "ticketlens --log {log:q} tcav-concept --checkpoint {input.checkpoint:q} --data {input.data:q}"
        " --random {input.random:q} --concept {input.concept:q} --tcav {params.tcav:q}"
        " --out {output:q} --threads {threads} --device {params.device}"
