# Report: per-dataset tables and findings, figures and report.md, then the cross-dataset summary.


def dataset_targets(wc):
    dirs = ticket_dirs(wc.dataset)
    return {
        "metrics": [f"{d}/metrics.json" for d in dirs],
        "saliency": [f"{d}/saliency.csv" for d in dirs],
        "consistency": [f"{d}/consistency.csv" for d in dirs],
        "null": [f"{d}/tcav/random.csv" for d in dirs],
        "tcav": [
            f"{d}/tcav/{slug}.csv" for d in dirs for slug in concept_slugs(wc.dataset)
        ],
    }


def study_config(dataset):
    return as_json(
        {
            "dataset": dataset,
            "study": config["study"],
            "pruning": config["pruning"],
            "explanations": config["explanations"],
            "concepts": config["datasets"][dataset].get("concepts", []),
        }
    )


rule summarize:
    input:
        unpack(dataset_targets),
    output:
        summary=report(
            "results/{dataset}/summary.csv",
            caption="../report/summary.rst",
            category="{dataset}",
            subcategory="tables",
        ),
        aggregate=report(
            "results/{dataset}/summary_agg.csv",
            caption="../report/summary_agg.rst",
            category="{dataset}",
            subcategory="tables",
        ),
        tcav=report(
            "results/{dataset}/tcav_summary.csv",
            caption="../report/tcav_summary.rst",
            category="{dataset}",
            subcategory="tables",
        ),
        findings="results/{dataset}/findings.json",
        metrics="results/{dataset}/metrics.json",
    log:
        "logs/{dataset}/summarize.log",
    params:
        config=lambda wc: study_config(wc.dataset),
    shell:
        "ticketlens --log {log:q} summarize --dataset {wildcards.dataset:q}"
        " --results results/{wildcards.dataset:q} --config {params.config:q}"


rule report:
    input:
        summary="results/{dataset}/summary.csv",
        aggregate="results/{dataset}/summary_agg.csv",
        tcav="results/{dataset}/tcav_summary.csv",
        findings="results/{dataset}/findings.json",
        saliency=lambda wc: [f"{d}/saliency.npz" for d in ticket_dirs(wc.dataset)],
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
        "logs/{dataset}/report.log",
    params:
        config=lambda wc: study_config(wc.dataset),
    shell:
        "ticketlens --log {log:q} report --dataset {wildcards.dataset:q}"
        " --results results/{wildcards.dataset:q} --config {params.config:q}"


rule report_all:
    input:
        reports=expand("results/{dataset}/report.md", dataset=DATASETS),
        metrics=expand("results/{dataset}/metrics.json", dataset=DATASETS),
    output:
        report="results/report.md",
        metrics="results/metrics.json",
        summary="results/summary.txt",
    log:
        "logs/report_all.log",
    params:
        folders=expand("results/{dataset}", dataset=DATASETS),
    shell:
        "ticketlens --log {log:q} report-all --datasets {params.folders:q} --out-dir results"
