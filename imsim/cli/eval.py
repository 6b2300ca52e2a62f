"""``imsim eval``: build a copy-detection benchmark from your images; score models and fusions on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ImsimError
from ..eval import BENCHMARK_FORMAT
from ..settings import get_settings
from ._common import JsonOpt, console, err, print_json

app = typer.Typer(
    help="Evaluation: build a copy-detection benchmark from your images; compare models and fusions.", no_args_is_help=True
)


@app.command("build-copydetect")
def build(
    refs: Annotated[Path, typer.Option("--refs", help="A folder of real images (the pool the benchmark is drawn from).")],
    out: Annotated[Path, typer.Option("--out", help="A new folder for the benchmark.")],
    queries: Annotated[int, typer.Option(help="Queries that are edited copies of a reference.")] = 200,
    negatives: Annotated[
        int, typer.Option(help="Queries that are edited copies of held-out images (no copy among the references).")
    ] = 100,
    references: Annotated[int, typer.Option(help="Cap on the reference set (0: every image left in the pool).")] = 0,
    distractors: Annotated[
        Path | None, typer.Option(help="Another folder whose images join the references, never queried.")
    ] = None,
    background: Annotated[
        int, typer.Option(help="Images set aside (neither queried nor referenced) for score normalisation.")
    ] = 0,
    max_edits: Annotated[int, typer.Option(help="Edits combined per query: 1 to this many.")] = 3,
    seed: Annotated[int, typer.Option(help="Everything random comes from this seed.")] = 0,
    augly: Annotated[
        bool, typer.Option("--augly/--no-augly", help="Overlays from Meta's AugLy when installed (else Pillow).")
    ] = True,
) -> None:
    """Build a DISC21-style copy-detection benchmark (references, edited-copy queries, no-copy queries, ground truth)."""
    from ..eval.build import build_copydetect

    manifest = build_copydetect(
        refs,
        out,
        queries=queries,
        negatives=negatives,
        references=references,
        distractors=distractors,
        background=background,
        max_edits=max_edits,
        seed=seed,
        prefer_augly=augly,
    )
    print_json(manifest)


RUN_HELP = f"""Score models and fusions: recall@1/3/10, µAP, recall at 90% precision, duplicate thresholds, images/s.

Writes a report and OUT/calibration.json; thresholds are used by `imsim duplicates` only once applied
(`imsim eval apply OUT/calibration.json`, or `imsim duplicates --calibration OUT/calibration.json`).

The --bench folder is checked before any model loads; a folder that breaks this layout is an error naming the
file, line or id (exit 2).

\b
{BENCHMARK_FORMAT}"""


@app.command("run", help=RUN_HELP)
def run(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for report.md, report.json, plots, calibration.json and the eval store.")
    ],
    bench: Annotated[
        Path | None, typer.Option("--bench", help="A benchmark folder (layout above, and in docs/evaluation.md).")
    ] = None,
    groups: Annotated[Path | None, typer.Option("--groups", help="A path,group CSV of images that belong together.")] = None,
    models: Annotated[
        str | None,
        typer.Option("--models", "-m", help="Model specs: clip,dinov2,dinov2@dinov2_pooling=cls+gem ... (default: IMSIM_MODELS)"),
    ] = None,
    fusion: Annotated[
        str,
        typer.Option(
            "--fusion",
            help="Fusions to score besides each model: rrf, weighted, calibrated (weights fitted on the queries, scored "
            "on folds it was not fitted on).",
        ),
    ] = "rrf,weighted,calibrated",
    whiten: Annotated[
        bool, typer.Option("--pca-whiten", help="Also score each model with PCA-whitening learned on the references.")
    ] = False,
    score_norm: Annotated[
        bool, typer.Option("--score-norm", help="Also score each model minus each query's nearest background similarity.")
    ] = False,
    milvus_uri: Annotated[str, typer.Option(help="Run in this Milvus (prefix imsimeval) instead of a Lite file in --out.")] = "",
    as_json: JsonOpt = False,
) -> None:
    from ..eval import report as eval_report
    from ..eval.build import Benchmark, Groups
    from ..eval.runner import Evaluation
    from ..eval.specs import parse_models

    if bench is None and groups is None:
        raise ImsimError("give --bench (a copy-detection benchmark) and/or --groups (a path,group CSV)")
    fusions = [f.strip() for f in fusion.split(",") if f.strip()]
    for f in fusions:
        if f not in ("rrf", "weighted", "calibrated"):
            raise ImsimError(f"unknown fusion {f!r}: use rrf, weighted and/or calibrated")
    loaded = Benchmark.load(bench) if bench is not None else None  # checked before any model loads
    loaded_groups = Groups.load(groups) if groups is not None else None
    settings = get_settings()
    specs = parse_models(models or ",".join(settings.model_names))
    evaluation = Evaluation(specs, settings, out, milvus_uri=milvus_uri, progress=err.print)
    if loaded is not None:
        evaluation.copydetect(loaded, fusions, whiten=whiten, score_norm=score_norm)
        evaluation.save_calibration()
    if loaded_groups is not None:
        evaluation.groups(loaded_groups, fusions)
    command = "imsim eval run " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else ""
    files = eval_report.write(evaluation.report, out, command=command)
    if as_json:
        print_json(evaluation.report.as_dict())
    else:
        console.print(eval_report.markdown(evaluation.report), highlight=False, soft_wrap=True)
    if evaluation.report.recommendation:
        err.print(f"recommendation: {evaluation.report.recommendation}", highlight=False)
    err.print("wrote " + ", ".join(str(f) for f in files))


@app.command("apply")
def apply(calibration_file: Annotated[Path, typer.Argument(help="A calibration.json written by `imsim eval run`.")]) -> None:
    """Make a calibration's thresholds the ones `imsim duplicates` uses, and its calibrated fusion the one
    `imsim search --fusion calibrated` uses (IMSIM_DATA_DIR/calibration.json)."""
    from .. import calibration

    try:
        usable, unreached = calibration.measured(json.loads(calibration_file.read_text()))
    except (OSError, ValueError) as exc:
        raise ImsimError(f"cannot read calibration {calibration_file}: {exc}") from None
    for key in unreached:
        err.print(f"skipped {key}: its links never reached 90 % precision on that benchmark (no threshold measured)")
    if not usable:
        err.print(f"nothing applied from {calibration_file}: `imsim duplicates` keeps the thresholds it had")
        return
    target = calibration.save(get_settings().data_dir, usable)
    fusions = sum(1 for record in usable.values() if "fusion" in record)
    err.print(
        f"{len(usable) - fusions} threshold(s)"
        + (f" and {fusions} calibrated fusion(s)" if fusions else "")
        + f" applied to {target}"
    )
