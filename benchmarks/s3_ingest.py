"""Images in an object store: the two targets of issue 29, against a real S3 server (SeaweedFS on loopback).

1. **Rate**: null-model ingest (the real read → hash → decode → resize → batch path, models that cost ~nothing,
   a no-op sink) of the same 1024×768 JPEGs from local files and from the S3 server, in one run, alternating
   (local, S3, local, S3; the better of each). Target: S3 ≥ 80 % of the local rate.
2. **Unchanged prefix**: ``--unchanged`` small objects ingested once into a Milvus Lite store (null models), then
   ingested again: the GETs sent (botocore's event hook) and bytes read (the pipeline's count), and its wall time
   against one LIST of the prefix. Target: 0 bodies downloaded; time ≤ 2× the LIST.

    python benchmarks/s3_ingest.py                         # 1,000 files at 1024x768, 10,000 unchanged objects
    python benchmarks/s3_ingest.py --files 200 --unchanged 2000   # quick
    python benchmarks/s3_ingest.py --no-rate --stores lite server   # part 2 on Lite and on a Milvus 2.3.5 server

Everything runs on this machine: the S3 server competes with the pipeline for its cores, as a MinIO beside the
workers would.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.s3 import S3Server  # noqa: E402


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def upload(server: S3Server, bucket: str, items: list[tuple[str, bytes]], threads: int = 32) -> None:
    def put(part: list[tuple[str, bytes]]) -> None:
        client = server.client()
        for key, body in part:
            client.put_object(Bucket=bucket, Key=key, Body=body)

    parts = [items[i : i + 200] for i in range(0, len(items), 200)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--unchanged", type=int, default=10_000)
    parser.add_argument(
        "--stores",
        nargs="+",
        choices=["lite", "server"],
        default=["lite"],
        help="where the unchanged prefix is stored: Milvus Lite, and/or a Milvus 2.3.5 server started here",
    )
    parser.add_argument("--no-rate", action="store_true", help="skip part 1 (the rate)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import os

    from imsim.bench import corpus, null_models, run_ingest
    from imsim.settings import load
    from imsim.sources import s3
    from imsim.sources.paths import Discovery, iter_files

    tmp = Path(tempfile.mkdtemp(prefix="imsim-s3-bench-"))
    results: dict[str, Any] = {"files": args.files, "size": args.size, "unchanged": args.unchanged}
    server = S3Server(tmp / "s3")
    try:
        os.environ.update({k: v for k, v in server.env().items() if k != "IMSIM_S3_ENDPOINT"})
        width, height = (int(v) for v in args.size.split("x"))
        settings = load({"data_dir": tmp / "data", "s3_endpoint": server.url, "env_file": tmp / "none.env", "device": "cpu"})
        config = s3.S3Config.from_settings(settings)

        # 1. the same JPEGs from disk and from the bucket
        if not args.no_rate:
            say(f"making {args.files} JPEGs of {args.size} and uploading them")
            local = corpus(None, args.files, (width, height), tmp / "local")
            server.client().create_bucket(Bucket="bench")
            upload(server, "bench", [(f"c/{Path(p).name}", Path(p).read_bytes()) for p in local])
            listed = list(iter_files(["s3://bench/c/"], Discovery(), settings=settings))
            assert len(listed) == len(local), (len(listed), len(local))
            models = null_models()
            rates: dict[str, list[float]] = {"local": [], "s3": []}
            cpu: dict[str, list[float]] = {"local": [], "s3": [], "server": []}
            for round_ in range(2):
                for kind, paths in (("local", local), ("s3", listed)):
                    say(f"round {round_ + 1}: null-model ingest from {kind}")
                    run = run_ingest(paths, settings, models, sink="none", store_pid=server.proc.pid if server.proc else None)
                    assert not run.failures, list(run.failures.items())[:3]
                    rates[kind].append(run.images / run.seconds)
                    cpu[kind].append(run.cpu_ms_per_image)
                    if kind == "s3" and run.store_cpu_seconds is not None:
                        cpu["server"].append(1000 * run.store_cpu_seconds / run.images)
            results["local_rate"] = max(rates["local"])
            results["s3_rate"] = max(rates["s3"])
            results["s3_over_local"] = results["s3_rate"] / results["local_rate"]
            results["rates"] = rates
            results["cpu_ms"] = {kind: min(values) for kind, values in cpu.items() if values}

        # 2. an unchanged prefix, ingested again
        say(f"uploading {args.unchanged} small objects")
        small = io.BytesIO()
        from PIL import Image

        Image.new("RGB", (32, 24), (120, 60, 30)).save(small, "JPEG")
        if args.no_rate:
            server.client().create_bucket(Bucket="bench")
        server.bulk_put("bench", [f"u/{i // 1000:03d}/{i:06d}.jpg" for i in range(args.unchanged)], body=small.getvalue())
        for kind in args.stores:
            results.setdefault("unchanged_by_store", {})[kind] = unchanged(kind, settings, config, tmp)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    if "local_rate" in results:
        report_rate(results)
    for kind, part in results.get("unchanged_by_store", {}).items():
        report_unchanged(kind, part)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def unchanged(kind: str, settings: Any, config: Any, tmp: Path) -> dict[str, Any]:
    """Ingest the prefix once into ``kind`` (Milvus Lite, or a Milvus 2.3.5 server started here), then again."""
    from imsim.bench import null_models
    from imsim.ingest import LOOKUP_FIELDS, LOOKUP_IDS, SKIP_CHECK_CONSISTENCY, Ingestor, ingest_local
    from imsim.sources import s3
    from imsim.sources.names import path_id
    from imsim.sources.paths import Discovery, iter_files

    milvus = None
    if kind == "server":
        from tests.support.servers import MilvusServer

        say("starting a Milvus 2.3.5 server")
        milvus = MilvusServer(tmp / f"milvus-{kind}")
        store_settings = settings.replace(milvus_uri=milvus.uri, skip_unchanged=True)
    else:
        store_settings = settings.replace(data_dir=tmp / f"store-{kind}", skip_unchanged=True)
    try:
        say(f"{kind}: first ingest of the prefix (null models)")
        with Ingestor(store_settings, embedders=null_models()) as ingestor:
            first = ingest_local(
                list(iter_files(["s3://bench/u/"], Discovery(), settings=settings)), store_settings, ingestor=ingestor
            )
            assert first.done > 0 and not first.failures, (first.done, list(first.failures.items())[:3])
            gets: list[str] = []
            s3.client(config).meta.events.register(
                "before-parameter-build.s3.GetObject", lambda params, **_: gets.append(params["Key"])
            )
            say(f"{kind}: one LIST of the prefix")
            started = time.perf_counter()
            count = sum(1 for _ in s3.iter_objects("s3://bench/u/", config))
            list_seconds = time.perf_counter() - started
            say(f"{kind}: ingest of the unchanged prefix")
            started = time.perf_counter()
            again = ingest_local(iter_files(["s3://bench/u/"], Discovery(), settings=settings), store_settings, ingestor=ingestor)
            again_seconds = time.perf_counter() - started
            say(f"{kind}: the store's skip-check lookups alone (every id, every model, {LOOKUP_IDS} a request, 2 threads)")
            ids = [path_id(uri) for uri in s3.iter_objects("s3://bench/u/", config)]
            started = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                for collection in ingestor.collections.values():
                    list(
                        pool.map(
                            lambda i, c=collection: ingestor.store.rows.get(
                                c, ids[i : i + LOOKUP_IDS], LOOKUP_FIELDS, consistency=SKIP_CHECK_CONSISTENCY
                            ),
                            range(0, len(ids), LOOKUP_IDS),
                        )
                    )
            lookup_seconds = time.perf_counter() - started
    finally:
        if milvus is not None:
            milvus.kill()
    return {
        "listed": count,
        "list_seconds": list_seconds,
        "reingest_seconds": again_seconds,
        "lookup_seconds": lookup_seconds,
        "reingest_over_list": again_seconds / list_seconds,
        "reingest_skipped": again.skipped,
        "reingest_gets": len(gets),
        "reingest_bytes": again.read_bytes,
    }


def report_rate(results: dict[str, Any]) -> None:
    rates = results["rates"]
    print(f"null-model ingest of {results['files']} JPEGs {results['size']}, no-op sink, best of 2 rounds each:")
    print(f"  local files  {results['local_rate']:8.1f} images/s   (rounds: {', '.join(f'{r:.1f}' for r in rates['local'])})")
    print(f"  S3 (weed)    {results['s3_rate']:8.1f} images/s   (rounds: {', '.join(f'{r:.1f}' for r in rates['s3'])})")
    ok = results["s3_over_local"] >= 0.8
    print(f"  S3 / local   {results['s3_over_local']:8.3f}   target >= 0.80   {'PASS' if ok else 'FAIL'}")
    per = results["cpu_ms"]
    print(
        f"  CPU ms/image: pipeline local {per['local']:.2f}, pipeline S3 {per['s3']:.2f}, "
        f"S3 server {per.get('server', float('nan')):.2f} (on the same cores)"
    )
    print(
        f"  projection, store on other machines and the pipeline CPU-bound: S3 / local = "
        f"{per['local'] / per['s3']:.3f} (pipeline CPU per image, local over S3)"
    )


def report_unchanged(kind: str, part: dict[str, Any]) -> None:
    where = {"lite": "Milvus Lite file", "server": "Milvus 2.3.5 server"}[kind]
    print(f"unchanged prefix of {part['listed']} objects, ingested again ({where}):")
    print(f"  one LIST     {part['list_seconds']:8.2f} s")
    print(
        f"  re-ingest    {part['reingest_seconds']:8.2f} s   skipped {part['reingest_skipped']}, "
        f"{part['reingest_gets']} GETs, {part['reingest_bytes']} bytes read"
    )
    print(f"  of which store lookups alone (every model's rows of every id): {part['lookup_seconds']:.2f} s")
    ok_gets = part["reingest_gets"] == 0 and part["reingest_bytes"] == 0
    ok_time = part["reingest_over_list"] <= 2
    print(f"  bodies downloaded: {part['reingest_gets']}   target 0   {'PASS' if ok_gets else 'FAIL'}")
    print(f"  re-ingest / LIST {part['reingest_over_list']:8.2f}   target <= 2   {'PASS' if ok_time else 'FAIL'}")


if __name__ == "__main__":
    main()
