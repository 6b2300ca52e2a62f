"""``imsim doctor``, ``config``, ``store serve`` and ``bench``: running and checking a deployment."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..errors import ImsimError
from ..settings import get_settings, redact
from ._common import SOME_FAILED, JsonOpt, console, err, print_json

app = typer.Typer()
store_app = typer.Typer(help="The embedded Milvus Lite store.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print numbers.", no_args_is_help=True)


@app.command()
def doctor(
    queue: Annotated[bool, typer.Option("--queue/--no-queue", help="Check Redis and the workers.")] = True,
    models: Annotated[
        bool, typer.Option("--models/--no-models", help="Load each model and compare it with its collection.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Check that Redis, Milvus and the models are reachable and consistent; exit 1 if anything failed."""
    from ..doctor import run_checks

    checks = run_checks(get_settings(), queue=queue, models=models)
    if as_json:
        print_json([c.as_dict() for c in checks])
    else:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            line = f"[{colour[c.status]}]{c.status:>4}[/] {escape(c.name)}: {escape(c.detail)}"
            console.print(line, markup=True, highlight=False, soft_wrap=True)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(SOME_FAILED)


@app.command()
def config(
    env: Annotated[bool, typer.Option("--env", help="Print every setting as IMSIM_*=default lines (.env.example).")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the configuration reference as Markdown.")] = False,
) -> None:
    """The effective settings (passwords and tokens masked, hosts shown), or the generated reference with --env / --markdown."""
    from ..settings.reference import env_example, markdown_reference

    if env or markdown:
        sys.stdout.write(env_example() if env else markdown_reference())
        return
    settings = get_settings()
    for name, value in settings.flat().items():
        if name == "redis_url":
            shown = redact(value.get_secret_value())
        elif hasattr(value, "get_secret_value"):
            shown = "**" if value.get_secret_value() else ""
        elif name == "milvus_uri":
            shown = redact(str(value)) if value else f"  # empty: the Milvus Lite store {settings.resolved_milvus_uri}"
        elif isinstance(value, str) and "://" in value:  # IMSIM_S3_ENDPOINT, IMSIM_API_URL: a password in a URL is masked
            shown = redact(value)
        elif isinstance(value, tuple):
            shown = ",".join(str(v) for v in value)
        else:
            shown = value
        console.print(f"IMSIM_{name.upper()}={shown}", highlight=False, soft_wrap=True)
    source = settings.env_file if settings.env_file.is_file() else "(none)"
    err.print(f"env file: {source}", highlight=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default IMSIM_API_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default IMSIM_API_PORT, 8080).")] = None,
    openapi: Annotated[
        bool, typer.Option("--openapi", help="Print the API's OpenAPI document (docs/openapi.json) and exit.")
    ] = False,
) -> None:
    """Serve the HTTP API and the web pages (search, duplicates review), models loaded once and kept warm.

    Beyond loopback it needs IMSIM_API_TOKEN (every request then sends `Authorization: Bearer TOKEN`). /healthz
    answers at once; /readyz once the models are loaded and the store and Redis answer; /docs is the API's schema.

    \b
    Examples:
      imsim serve                                  http://127.0.0.1:8080
      IMSIM_API_TOKEN=secret imsim serve --host 0.0.0.0 --port 8080
      imsim serve --openapi > docs/openapi.json     the contract, after changing it"""
    if openapi:
        from ..api.app import contract

        print(json.dumps(contract(), indent=2, sort_keys=True))
        return
    from ..api.server import serve as serve_api

    settings = get_settings()
    host, port = host or settings.api_host, port or settings.api_port
    serve_api(
        settings,
        host,
        port,
        on_start=lambda: err.print(
            f"imsim API on http://{host}:{port} (pages: /, /duplicates; schema: /docs); loading {settings.models}"
        ),
    )


@store_app.command("serve")
def store_serve(
    port: Annotated[int, typer.Option(help="Port of the gRPC server.")] = 19530,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="The Milvus Lite store to serve (default: the one `imsim ingest --local` uses, IMSIM_DATA_DIR/milvus.db)."
        ),
    ] = None,
) -> None:
    """Serve the embedded store to several processes (workers + CLI); then IMSIM_MILVUS_URI=http://HOST:PORT.

    It serves the very store `imsim ingest --local` writes (a Milvus Lite store is a folder), so what was
    ingested locally is searchable through the server and the other way round (one process at a time).

    \b
    Examples:
      imsim store serve &                           the data dir's store on 127.0.0.1:19530
      imsim worker & imsim ingest /photos           commands of this data dir find it by themselves"""
    import json

    from ..settings import SERVED_FILE

    settings = get_settings()
    directory = data_dir or Path(
        settings.milvus_uri if settings.is_milvus_lite_file and settings.milvus_uri else settings.lite_store
    )
    exe = shutil.which("milvus-lite") or str(Path(sys.executable).parent / "milvus-lite")
    uri = f"http://{host}:{port}"
    if Path(directory).resolve() == settings.lite_store.resolve():  # other processes of this data dir find it here
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        record = {"uri": uri, "host": host, "port": port, "pid": os.getpid(), "store": str(directory)}
        (settings.data_dir / SERVED_FILE).write_text(json.dumps(record))  # exec keeps the pid: the server's own
    err.print(
        f"Milvus Lite server on {host}:{port}, store {directory}. Commands with this data dir use it by themselves; "
        f"elsewhere set IMSIM_MILVUS_URI={uri}"
    )
    os.execvp(exe, [exe, "server", "--data-dir", str(directory), "--host", host, "--port", str(port)])


@store_app.command("copy")
def store_copy(
    to: Annotated[str, typer.Option("--to", help="The target Milvus server: http://host:19530.")],
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="A file holding the target's token or user:password ('-': read it from stdin); never on the command "
            "line, where every process of the machine can read it (/proc/PID/cmdline).",
        ),
    ] = None,
    batch: Annotated[int, typer.Option(help="Rows per read and per upsert.", min=1, max=16_384)] = 1000,
    restart: Annotated[
        bool, typer.Option("--restart", help="Copy from the start, ignoring where an earlier copy got to.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy every collection version (rows, vectors, descriptions, properties, aliases) from the configured store to a
    Milvus server, without re-embedding; resumable (run it again after an interruption), verified by row counts and a
    sample of vectors compared bit for bit. Then point IMSIM_MILVUS_URI at the target."""
    from pydantic import SecretStr
    from rich.progress import TaskID

    from ..store import open_store
    from ..store.copy import copy_store
    from ._common import progress

    token = ""
    if token_file is not None:
        try:
            token = (sys.stdin.read() if str(token_file) == "-" else token_file.read_text()).strip()
        except OSError as exc:
            raise ImsimError(f"--token-file {token_file}: {exc.strerror or exc}") from None
    settings = get_settings()
    target_settings = settings.replace(milvus_uri=to, milvus_token=SecretStr(token))
    if target_settings.is_milvus_lite_file:
        raise ImsimError(f"--to {to!r}: give a Milvus server URI (http://host:19530), not a Lite file")
    with open_store(settings) as source, open_store(target_settings) as target, progress() as bar:
        tasks: dict[str, TaskID] = {}

        def show(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total, note="")
            bar.update(tasks[name], completed=done)

        report = copy_store(source, target, settings.data_dir, batch=batch, restart=restart, on_progress=show)
    if as_json:
        print_json(
            {"verified": report.verified, "collections": [asdict(c) for c in report.collections], "aliases": report.aliases}
        )
    else:
        for c in report.collections:
            console.print(
                f"{c.name}: {c.rows:,} rows, {c.copied:,} {'brought up to date' if c.synced else 'copied'} now"
                + (f", {c.deleted:,} removed" if c.deleted else "")
                + f", {c.target_rows:,} on the target; {c.identical}/{c.sampled} sampled rows identical"
                + ("" if c.verified else "  [NOT VERIFIED]"),
                highlight=False,
            )
            if not c.verified:
                err.print(f"  {c.name}: {mismatch(c)}", highlight=False)
        for alias, collection in report.aliases.items():
            console.print(f"alias {alias} -> {collection}", highlight=False)
        if report.verified:
            err.print(f"copied and verified: set IMSIM_MILVUS_URI={redact(to)} to use it", highlight=False)
    if not report.verified:
        raise typer.Exit(SOME_FAILED)


def mismatch(c: Any) -> str:
    """Why a copied collection did not verify, and what to do (a :class:`~imsim.store.copy.CollectionCopy`)."""
    again = "run `imsim store copy` again: it brings a finished copy up to date"
    if c.target_rows < c.rows:
        return (
            f"{c.rows - c.target_rows:,} rows of the source are missing on the target: rows were added to the source "
            f"while it copied (an ingest, a worker), or the copy stopped; {again}"
        )
    if c.target_rows > c.rows:
        return (
            f"the target holds {c.target_rows - c.rows:,} rows more than the source: rows were deleted from the source "
            f"while it copied, or written to the target directly; {again} (it removes rows the source no longer has)"
        )
    return (
        f"{c.sampled - c.identical} of {c.sampled} sampled rows differ: rows were re-embedded or re-tagged on one side "
        f"while it copied; {again}"
    )


def _corpus(images: str | None, generate: int, size: str, quality: int) -> list[str]:
    import tempfile

    from .. import bench

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ImsimError(f"--size {size!r} is not WIDTHxHEIGHT") from None
    return bench.corpus(images, generate, (width, height), Path(tempfile.mkdtemp(prefix="imsim-bench-images-")), quality)


ImagesOpt = Annotated[str | None, typer.Option(help="A folder of images (default: generate JPEGs from the bundled photos).")]
GenerateOpt = Annotated[int, typer.Option(help="How many JPEGs to generate when --images is not given.")]
SizeOpt = Annotated[str, typer.Option(help="Size of generated JPEGs, WxH (4032x3024 for camera-size photos).")]
QualityOpt = Annotated[int, typer.Option(help="JPEG quality of generated files.")]


@bench_app.command("ingest")
def bench_ingest(
    images: ImagesOpt = None,
    generate: GenerateOpt = 512,
    size: SizeOpt = "1024x768",
    quality: QualityOpt = 90,
    null_models: Annotated[
        bool,
        typer.Option(
            "--null-models",
            help="Null models shaped like CLIP B/32 and DINOv2 B/14: the host pipeline alone (a forward pass costs ~nothing).",
        ),
    ] = False,
    random_weights: Annotated[
        bool, typer.Option("--random-weights", help="CLIP B/32 + DINOv2 B/14 architectures with random weights (no hub needed).")
    ] = False,
    store: Annotated[
        list[str] | None,
        typer.Option("--store", help="none (no-op sink), lite (a Milvus Lite file) or a Milvus URI; repeat for one row each."),
    ] = None,
    baseline: Annotated[int, typer.Option(help="Images for the one-image-per-call loop (real models only; 0: skip).")] = 32,
    store_pid: Annotated[
        int | None, typer.Option("--store-pid", help="The Milvus server's pid: its CPU per image is reported beside ours.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest throughput through the real pipeline: images/s, CPU-ms per image per stage, per store; and the
    one-image-per-call baseline on the same models and files."""
    from .. import bench
    from ..models import load_models

    settings = get_settings()
    files = _corpus(images, generate, size, quality)
    if null_models:
        models = bench.null_models([n for n in settings.model_names if n in bench.NULL_MODELS] or ["clip", "dinov2"])
    else:
        if random_weights:
            from ..models.testing import build_random_models

            cache = settings.data_dir / "bench-models"
            dirs = {"clip": cache / "random-clip-vit-b32", "dinov2": cache / "random-dinov2-base"}
            if not all((d / "config.json").exists() for d in dirs.values()):
                dirs = build_random_models(cache)
            settings = settings.replace(clip_model=str(dirs["clip"]), dinov2_model=str(dirs["dinov2"]))
        models = load_models(settings)
    rows = [
        bench.run_ingest(files, settings, models, sink=kind, store_pid=store_pid if kind not in ("none", "lite") else None)
        for kind in (store or ["none"])
    ]
    base = bench.run_baseline(models, files[:baseline], settings) if baseline and not null_models else None
    if as_json:
        print_json(
            {
                "files": len(files),
                "size": size,
                "runs": [r.as_dict() for r in rows],
                "baseline": asdict(base) | {"images_per_s": round(base.images_per_s, 2)} if base else None,
            }
        )
        return
    _print_ingest_rows(
        rows,
        base,
        f"{len(files)} files ({size if not images else images}); models {', '.join(models)}"
        f"{' (null)' if null_models else ''}; device {next(iter(models.values())).device}",
    )


def _print_ingest_rows(rows: list[Any], base: Any, header: str) -> None:
    """`imsim bench ingest`'s rows as lines: throughput, CPU per stage, waits on the store, the baseline."""
    from .. import bench

    console.print(header, highlight=False)
    for r in rows:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r.stage_cpu_ms().items())
        console.print(
            f"[bold]{r.images_per_s:8.1f} images/s[/]  {r.cpu_ms_per_image:6.2f} CPU-ms/image  ({stages})  "
            f"decoder {r.decoder}, {r.workers} threads, into {escape(r.store)}",
            markup=True,
            highlight=False,
        )
        server = f"; the store server's own CPU {r.store_cpu_ms_per_image:.2f} ms/image" if r.store_cpu_ms_per_image else ""
        if r.seal_seconds >= 0.001:
            server += (
                f"; sealing the job (flush, once) took {r.seal_seconds:.3f} s more: "
                f"{r.sealed_images_per_s:.1f} images/s with it counted"
            )
        console.print(
            f"          waits on the store: {r.wait_ms_per_image:.3f} ms/image for writes, "
            f"{r.lookup_wait_ms_per_image:.3f} ms/image for skip-check reads (read threads){server}",
            highlight=False,
        )
        console.print(
            f"          projection, not a measurement: {r.projected_images_per_s:,.0f} images/s on "
            f"{bench.PROJECTION_CORES} cores if the host side scaled linearly and the store never made it wait",
            highlight=False,
        )
    if base:
        console.print(
            f"baseline (one image per call): {base.images_per_s:.2f} images/s; speed-up "
            f"{rows[0].images_per_s / base.images_per_s if base.images_per_s else 0:.1f}x; min cosine per model "
            + ", ".join(f"{k} {v:.4f}" for k, v in base.min_cosine.items()),
            highlight=False,
        )


@bench_app.command("decode")
def bench_decode(
    images: ImagesOpt = None,
    generate: GenerateOpt = 256,
    size: SizeOpt = "1024x768",
    quality: QualityOpt = 90,
    decoders: Annotated[str, typer.Option(help="Decoders to compare, comma-separated.")] = "pillow,simplejpeg",
    workers: Annotated[str, typer.Option(help="Thread counts to compare (0: one per core).")] = "1,0",
    as_json: JsonOpt = False,
) -> None:
    """Decode + resize (null models) per decoder and thread count on the same files, each checked against Pillow's inputs."""
    from .. import bench

    files = _corpus(images, generate, size, quality)
    runs = bench.compare_decoders(files, bench.null_models(), decoders.split(","), [int(w) for w in workers.split(",")])
    if as_json:
        print_json([r.as_dict() for r in runs])
        return
    for r in runs:
        console.print(
            f"{r.decoder:<11} {r.workers} threads: {r.images_per_s:8.1f} images/s, {r.cpu_ms_per_image:6.2f} CPU-ms/image; "
            f"inputs identical to Pillow's for {r.identical}/{r.images}; min cosine {r.min_cosine:.6f}",
            highlight=False,
        )
