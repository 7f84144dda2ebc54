# Report: per-dataset tables and findings, figures and report.md, then the cross-dataset summary.


def summarize_dataset_inputs(wc):
    tickets = STUDY.tickets(wc.dataset)
    slugs = concept_slugs(wc.dataset)
    return {
        "metrics": [t.file("metrics") for t in tickets],
        "saliency": [t.file("saliency_table") for t in tickets],
        "consistency": [t.file("consistency") for t in tickets],
        "maps": [t.file("saliency_maps") for t in tickets],
        "calibration": [t.file("tcav_calibration") for t in tickets],
        "tcav": [t.file("tcav_concept", concept=s) for t in tickets for s in slugs],
        # the forgetting analysis: the ticket branch's per-image outcomes and agreement with the dense net
        "outcomes": [t.file("outcomes") for t in tickets if t.branch == TICKET],
        "agreement": [t.file("agreement") for t in tickets if t.branch == TICKET],
    }


def report_table(path, caption):
    return report(path, caption=caption, category="{dataset}", subcategory="tables")


rule summarize_dataset:
    input:
        unpack(summarize_dataset_inputs),
    output:
        summary=report_table("results/{dataset}/summary.csv", "../report/summary.rst"),
        aggregate=report_table(
            "results/{dataset}/summary_agg.csv", "../report/summary_agg.rst"
        ),
        tcav=report_table(
            "results/{dataset}/tcav_summary.csv", "../report/tcav_summary.rst"
        ),
        findings="results/{dataset}/findings.json",
        metrics="results/{dataset}/metrics.json",
    log:
        "logs/{dataset}/summarize_dataset.log",
    params:
        alpha=TCAV.alpha,
        findings=PARAMS.findings.to_json(),
        concepts=lambda wc: PARAMS.datasets[wc.dataset].concepts,
        tcav_tables=lambda wc: rules.tcav_concept.output[0],  # a pattern: every ticket x concept
    shell:
        "ticketlens --log {log:q} summarize-dataset --dataset {wildcards.dataset:q}"
        " --metrics {input.metrics:q} --saliency-tables {input.saliency:q}"
        " --consistency-tables {input.consistency:q} --saliency-maps {input.maps:q}"
        " --calibration-tables {input.calibration:q} --outcome-tables {input.outcomes:q}"
        " --agreement-tables {input.agreement:q} --concepts {params.concepts:q}"
        " --tcav-table-pattern {params.tcav_tables:q} --alpha {params.alpha}"
        " --settings {params.findings:q}"
        " --summary {output.summary:q} --aggregate {output.aggregate:q}"
        " --tcav-summary {output.tcav:q} --findings {output.findings:q} --metrics-out {output.metrics:q}"


rule build_dataset_report:
    input:
        summary=rules.summarize_dataset.output.summary,
        tcav=rules.summarize_dataset.output.tcav,
        findings=rules.summarize_dataset.output.findings,
        data=rules.prepare_dataset.output.data,
        saliency=lambda wc: [t.file("saliency_maps") for t in STUDY.tickets(wc.dataset)],
        image_maps=lambda wc: [
            t.file("image_maps")
            for t in STUDY.tickets(wc.dataset)
            if t.branch == TICKET
        ],
    output:
        report="results/{dataset}/report.md",
        figures=report(
            directory("results/{dataset}/figures"),
            patterns=["{name}.png"],
            caption="../report/figure.rst",
            category="{dataset}",
            subcategory="figures",
        ),
    log:
        "logs/{dataset}/build_dataset_report.log",
    shell:
        "ticketlens --log {log:q} build-dataset-report --dataset {wildcards.dataset:q}"
        " --summary {input.summary:q} --tcav-summary {input.tcav:q} --findings {input.findings:q}"
        " --data {input.data:q} --saliency {input.saliency:q} --image-maps {input.image_maps:q}"
        " --report {output.report:q} --figures {output.figures:q}"


rule build_study_report:
    input:
        reports=[DatasetFiles(d).file("report") for d in STUDY.datasets],
        findings=[DatasetFiles(d).file("findings") for d in STUDY.datasets],
        metrics=[DatasetFiles(d).file("metrics") for d in STUDY.datasets],
    output:
        report="results/report.md",
        metrics="results/metrics.json",
        summary="results/summary.txt",
    log:
        "logs/build_study_report.log",
    shell:
        "ticketlens --log {log:q} build-study-report --findings {input.findings:q}"
        " --metrics {input.metrics:q} --reports {input.reports:q} --report {output.report:q}"
        " --metrics-out {output.metrics:q} --summary-out {output.summary:q}"
