# Report: per-dataset tables and findings, figures and report.md, then the cross-dataset summary.


def summarize_dataset_inputs(wc):
    tickets = STUDY.tickets(wc.dataset)
    slugs = [concept_slug(c) for c in PARAMS.datasets[wc.dataset].concepts]
    return {
        "metrics": [t.file("metrics") for t in tickets],
        "saliency": [t.file("saliency_table") for t in tickets],
        "consistency": [t.file("consistency") for t in tickets],
        "maps": [t.file("saliency_maps") for t in tickets],
        "null": [t.file("tcav_null") for t in tickets],
        "tcav": [t.file("tcav_concept", concept=s) for t in tickets for s in slugs],
    }


def report_table(name, caption):
    return report(
        getattr(DATA, name), caption=caption, category="{dataset}", subcategory="tables"
    )


rule summarize_dataset:
    input:
        unpack(summarize_dataset_inputs),
    output:
        summary=report_table("summary", "../report/summary.rst"),
        aggregate=report_table("summary_agg", "../report/summary_agg.rst"),
        tcav=report_table("tcav_summary", "../report/tcav_summary.rst"),
        findings=DATA.findings,
        metrics=DATA.metrics,
    log:
        "logs/{dataset}/summarize_dataset.log",
    params:
        tickets=lambda wc: [str(t.folder) for t in STUDY.tickets(wc.dataset)],
        concepts=lambda wc: PARAMS.datasets[wc.dataset].concepts,
        alpha=TCAV.alpha,
        findings=PARAMS.findings.to_json(),
    shell:
        "ticketlens --log {log:q} summarize-dataset --dataset {wildcards.dataset:q}"
        " --tickets {params.tickets:q} --concepts {params.concepts:q} --alpha {params.alpha}"
        " --settings {params.findings:q}"
        " --summary {output.summary:q} --aggregate {output.aggregate:q}"
        " --tcav-summary {output.tcav:q} --findings {output.findings:q} --metrics {output.metrics:q}"


rule build_dataset_report:
    input:
        summary=DATA.summary,
        tcav=DATA.tcav_summary,
        findings=DATA.findings,
        data=DATA.prepared_data,
        saliency=lambda wc: [t.file("saliency_maps") for t in STUDY.tickets(wc.dataset)],
    output:
        report=DATA.report,
        figures=report(
            directory(DATA.figures),
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
        " --data {input.data:q} --saliency {input.saliency:q} --report {output.report:q}"
        " --figures {output.figures:q}"


rule build_study_report:
    input:
        reports=[DatasetFiles(d).report for d in STUDY.datasets],
        findings=[DatasetFiles(d).findings for d in STUDY.datasets],
        metrics=[DatasetFiles(d).metrics for d in STUDY.datasets],
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
