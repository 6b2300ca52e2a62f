"""An evaluation's output folder: ``report.md`` (tables), ``report.json`` (the same numbers for machines),
``pr_curves.png`` (precision-recall per method) and ``recall_at_k.png`` (and ``groups.png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .results import CV_FOLDS, K_VALUES, EvalReport


def write(report: EvalReport, out: Path, *, command: str = "") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.md", out / "report.json"]
    (out / "report.json").write_text(json.dumps({**report.as_dict(), "command": command}, indent=2) + "\n")
    files += _plots(report, out)
    (out / "report.md").write_text(markdown(report, command=command, plots=[f.name for f in files if f.suffix == ".png"]))
    return files


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown(report: EvalReport, *, command: str = "", plots: list[str] | None = None) -> str:
    lines = ["# imsim evaluation", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += [
        "## Models",
        "",
        "| label | model | source | revision | version | dim | embed images/s |",
        "| --- | --- | --- | --- | --- | ---: | ---: |",
    ]
    for label, m in report.models.items():
        lines.append(
            f"| {label} | {m['name']} | {m['source']} | {m['revision']} | {m['version']} | {m['dim']} | "
            f"{report.throughput.get(label, 0):.1f} |"
        )
    if "ingest" in report.throughput:
        lines += ["", f"End-to-end ingest (read, decode, every model, store): {report.throughput['ingest']:.1f} images/s."]
    lines += _copy_detection(report) + _duplicates(report) + _groups(report)
    if report.calibration_file:
        lines += [
            "",
            f"Duplicate thresholds saved to `{report.calibration_file}`; `imsim duplicates` uses them once applied "
            f"(`imsim eval apply {report.calibration_file}`, or `imsim duplicates --calibration {report.calibration_file}`).",
        ]
    if report.failures:
        lines += ["", f"## Files that failed ({len(report.failures)})", ""]
        lines += [f"- `{p}`: {why}" for p, why in sorted(report.failures.items())[:50]]
    for name in plots or []:
        lines += ["", f"![{name}]({name})"]
    return "\n".join(lines) + "\n"


def _copy_detection(report: EvalReport) -> list[str]:
    """The copy-detection section: every method's metrics, the fusion's weights, the recommendation."""
    if not report.copydetect:
        return []
    lines: list[str] = []
    b = report.bench
    lines += [
        "",
        "## Copy detection",
        "",
        f"Benchmark `{b.get('root', '')}`: {b.get('references', 0)} references, {b.get('queries', 0)} queries "
        f"({b.get('queries_with_copy', 0)} with a copy, {b.get('queries', 0) - b.get('queries_with_copy', 0)} without), "
        f"{b.get('background', 0)} background images.",
        "",
        "As Meta's ISC2021 reference code defines them (equal scores ranked false first, the worst case): recall@k "
        "per ground-truth pair (the true reference among the query's top k, ties counted against it); µAP over all "
        "(query, reference, score) predictions ranked together (top 10 per query, DISC21's metric); R@P90: the "
        "highest recall with precision still 90 %; score @P90 / @P95: that operating point's score (a similarity; "
        "fused:rrf's are rank-fusion sums of 1/(60+rank), fused:calibrated's match probabilities). These are "
        "retrieval scores; the thresholds `imsim duplicates` uses are calibrated below, on the pairs it links.",
        "",
        "| method | R@1 | R@3 | R@10 | µAP | R@P90 | score @P90 | score @P95 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report.copydetect:
        suffix = " (rrf)" if r.label == "fused:rrf" else ""
        th = {k: ("-" if v is None else f"{v:.4f}{suffix}") for k, v in r.thresholds.items()}
        lines.append(
            f"| {r.label} | {_pct(r.recall[1])} | {_pct(r.recall[3])} | {_pct(r.recall[10])} | {_pct(r.micro_ap)} | "
            f"{_pct(r.recall_at_p90)} | {th['p90']} | {th['p95']} |"
        )
    if report.fusion_weights:
        weights = ", ".join(f"{k} {v:+.3f}" for k, v in report.fusion_weights.items())
        lines += [
            "",
            "fused:calibrated is `sigmoid(bias + sum of weight x cosine)`, weights fitted by logistic regression on "
            f"every model's top candidates, scored on {CV_FOLDS} folds of the queries it was not fitted on; fitted on all "
            f"of them: {weights}.",
        ]
    if any("+pcaw" in r.label for r in report.copydetect):
        lines += [
            "",
            "`+pcaw`: PCA-whitening learned on the references; `+pcaw(collection)`: learned on the references and the "
            "edited copies beside them (the collection `imsim models whiten` sees), each fold of queries ranked with a "
            "whitening learned without it; `+pcaw(store)`: the whitened version in your own store. Each is a derived "
            "version of the evaluation's store, searched as `imsim search` searches one.",
        ]
    if report.recommendation:
        lines += ["", f"**Recommendation: {report.recommendation}.**"]
    gain = report.gain
    if gain and gain["method"] != gain["best_single"]:
        lines += [
            "",
            f"Against the best single model ({gain['best_single']}): {gain['method']} µAP "
            f"{gain['micro_ap_points']:+.1f} points, R@1 {gain['recall_at_1_points']:+.1f} points (against the best "
            "single model's R@1).",
        ]
    return lines


def _duplicates(report: EvalReport) -> list[str]:
    """The duplicates section: links, groups and components at the calibrated thresholds."""
    if not report.duplicates:
        return []
    lines: list[str] = []
    d0 = report.duplicates[0]
    lines += [
        "",
        "## Duplicates (`imsim duplicates` on the benchmark)",
        "",
        f"The references and the queries stored together ({d0.images} images); each image linked to its 16 nearest "
        f"neighbours as `imsim duplicates` does. Positives: the {d0.positives} pairs of images made from the same "
        "original (a query and its reference, two queries of one reference, two copies of one no-match original: "
        "the ground truth's reference_id and source columns, transitively); every other pair is a negative (two "
        "queries edited with the same overlay, two references). Threshold P90 / P95: the operating point of the "
        "links at 90 % / 95 % precision, as ISC2021 chooses it: the highest recall that keeps the precision, at its "
        "highest score (these go to calibration.json). At each: the links' precision / recall, the precision / "
        "recall of the groups `imsim duplicates` returns (every pair inside a group: two groups join only when half "
        "the pairs between them are links, IMSIM_DUPLICATE_LINK_SHARE), and, for comparison, of connected components "
        "(which chain groups through single links).",
        "",
        "| method | pairs seen | positives seen | threshold P90 | links P/R @P90 | groups P/R @P90 | components P/R @P90 "
        "| threshold P95 | links P/R @P95 | groups P/R @P95 | components P/R @P95 | groups @P95 (largest) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d in report.duplicates:
        cells = []
        for name in ("p90", "p95"):
            at, value = d.at.get(name), d.thresholds.get(name)
            if at is None or value is None:
                cells += ["-", "-", "-", "-"]
                continue
            cells += [
                f"{value:.4f}",
                f"{_pct(at['edge_precision'])} / {_pct(at['edge_recall'])}",
                f"{_pct(at['group_precision'])} / {_pct(at['group_recall'])}",
                f"{_pct(at.get('component_precision', 0.0))} / {_pct(at.get('component_recall', 0.0))}",
            ]
        p95 = d.at.get("p95")
        size = f"{int(p95['groups'])} ({int(p95['largest_group'])})" if p95 else "-"
        lines.append(f"| {d.label} | {d.pairs_seen} | {_pct(d.recall_seen)} | " + " | ".join(cells) + f" | {size} |")
    marked = {d.label: d.marked_negatives for d in report.duplicates if d.marked_negatives}
    if marked:
        lines += [
            "",
            "Pairs marked 'not a duplicate' in the store (`imsim serve`'s duplicates page), scored with the store's "
            "vectors of the same model versions and calibrated as negatives: "
            + ", ".join(f"{label} {n}" for label, n in marked.items())
            + ".",
        ]
    return lines


def _groups(report: EvalReport) -> list[str]:
    """The group-retrieval section."""
    if not report.groups:
        return []
    lines: list[str] = []
    g = report.group_info
    lines += [
        "",
        "## Group retrieval",
        "",
        f"{g.get('images', 0)} images in {g.get('groups', 0)} groups; every image queries "
        "all the others (itself excluded). mAP@{depth}: average precision over the top {depth} "
        "(members ranked lower count as "
        "not found), averaged over queries; R@k: a member of its group in the top k.".format(depth=g.get("depth", "all")),
        "",
        f"| method | mAP@{g.get('depth', '')} | R@1 | R@3 | R@10 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for g_result in report.groups:
        lines.append(
            f"| {g_result.label} | {_pct(g_result.map)} | "
            f"{_pct(g_result.recall[1])} | {_pct(g_result.recall[3])} | {_pct(g_result.recall[10])} |"
        )
    return lines


def _plots(report: EvalReport, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    if report.copydetect:
        fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
        colours = _colours(plt, len(report.copydetect))
        for colour, r in zip(colours, report.copydetect, strict=False):
            if r.curve is not None and len(r.curve.recall):
                ax.plot(
                    r.curve.recall,
                    r.curve.precision,
                    label=f"{r.label} (µAP {100 * r.micro_ap:.1f})",
                    linestyle="--" if r.kind != "model" else "-",
                    color=colour,
                )
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Copy detection: precision-recall")
        ax.axhline(0.9, color="grey", linewidth=0.6)
        ax.legend(fontsize=8, loc="lower left")
        ax.grid(alpha=0.3)
        files.append(_save(fig, out / "pr_curves.png"))
        files.append(
            _bars(
                plt,
                [(r.label, [r.recall[k] for k in K_VALUES] + [r.micro_ap]) for r in report.copydetect],
                [f"R@{k}" for k in K_VALUES] + ["µAP"],
                "Copy detection",
                out / "recall_at_k.png",
            )
        )
    if report.groups:
        files.append(
            _bars(
                plt,
                [(r.label, [r.map] + [r.recall[k] for k in K_VALUES]) for r in report.groups],
                ["mAP"] + [f"R@{k}" for k in K_VALUES],
                "Group retrieval",
                out / "groups.png",
            )
        )
    return files


def _bars(plt: Any, rows: list[tuple[str, list[float]]], metrics: list[str], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) * len(metrics) / 3), 4.5), dpi=110)
    width = 0.8 / max(len(rows), 1)
    for i, ((label, values), colour) in enumerate(zip(rows, _colours(plt, len(rows)), strict=False)):
        positions = [j + i * width for j in range(len(metrics))]
        bars = ax.bar(positions, values, width=width, label=label, color=colour)
        ax.bar_label(bars, labels=[f"{100 * v:.0f}" for v in values], fontsize=7)
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set(ylim=(0, 1.08), ylabel="fraction", title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _colours(plt: Any, count: int) -> list[Any]:
    """A distinct colour per method (tab10's ten repeat; tab20 has twenty)."""
    cmap = plt.get_cmap("tab10" if count <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(count)]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
