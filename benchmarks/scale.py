"""Scale: what a collection of 10k - 1M files costs imsim's lifecycle, measured on this machine. Prints numbers.

Hard-linked corpora (one small JPEG linked a million times costs seconds and no disk), synthetic clustered vectors,
real servers (Redis, a Milvus 2.3.5 server or Milvus Lite): nothing is mocked. Each part prints one line per size:

    python benchmarks/scale.py queue --files 10000 100000 1000000    # queuing a job, job records, jobs/status, cancel
    python benchmarks/scale.py queue --files 1000000 --appendonly    # ... with Redis's AOF on: its size, rewrite, reload
    python benchmarks/scale.py fromfile --files 1000000 10000000   # `ingest --from-file` alone: time, peak RSS, Redis
    python benchmarks/scale.py grown --rows 100000 1000000          # ingest rate into collections holding N rows
    python benchmarks/scale.py workers --files 100000               # a job through real workers into a server
    python benchmarks/scale.py sync --files 10000 100000            # re-ingest/sync of an unchanged tree: bytes read
    python benchmarks/scale.py duplicates --rows 100000 --lite      # duplicates over synthetic rows on Milvus Lite
    python benchmarks/scale.py duplicates --rows 100000 200000      # ... on a Milvus 2.3.5 server (started here)
    python benchmarks/scale.py duplicates --rows 1000000 --index FLAT  # 1M rows, no index build to wait for first
    python benchmarks/scale.py copy --rows 100000                   # `imsim store copy` Lite -> server, 2 models
    python benchmarks/scale.py delete --rows 100000                 # delete a folder and a glob on Milvus Lite
    python benchmarks/scale.py lite --rows 100000                   # Milvus Lite's envelope behind `imsim store serve`
    python benchmarks/scale.py whiten --rows 100000 1000000         # `imsim models whiten` on a Milvus 2.3.5 server

``--uri http://host:port`` uses a running Milvus server instead of starting one; ``--checkout DIR`` (queue only) also
runs the same commands with the imsim of another checkout (``git worktree add /tmp/old COMMIT``), for a before/after
on the same machine and corpus. Servers are started with the test suite's helpers (tests/support/servers.py):
every port free, loopback only. Memory is the peak RSS of the measured process (``wait4``), or Redis's own
accounting (``MEMORY USAGE``, ``INFO memory``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.rows import clustered  # noqa: E402
from tests.support.servers import SAMPLES, MilvusLiteServer, MilvusServer, RedisServer  # noqa: E402

WORK = Path(os.environ.get("IMSIM_SCALE_DIR", "/tmp/imsim-scale"))
PER_FOLDER = 1000


def say(line: str) -> None:
    print(line, flush=True)


# --- corpora ---------------------------------------------------------------------------------------------------
def hardlinked_corpus(files: int) -> Path:
    """``files`` hard links of a few small real JPEGs, ``PER_FOLDER`` per folder (kept between runs)."""
    root = WORK / f"corpus-{files}"
    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    sources = WORK / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    originals = []
    photos = sorted((SAMPLES / "photos").glob("*.jpg"))[:8]
    for i in range(64):  # a filesystem caps the links of one inode (ext4: 65,000): 64 files take a million
        target = sources / f"s{i}.jpg"
        if not target.exists():
            with Image.open(photos[i % len(photos)]) as im:
                im.convert("RGB").resize((96 + i, 72)).save(target, quality=85)
        originals.append(str(target))
    started = time.perf_counter()
    for n in range(files):
        folder = root / f"d{n // PER_FOLDER:05d}"
        if n % PER_FOLDER == 0:
            folder.mkdir(parents=True)
        os.link(originals[n % len(originals)], folder / f"img{n:07d}.jpg")
    marker.write_text(str(files))
    say(f"  (made {files:,} hard links in {time.perf_counter() - started:.1f} s)")
    return root


def path_list(root: Path, files: int) -> Path:
    listing = WORK / f"list-{files}.txt"
    if not listing.exists():
        with open(listing, "w") as out:
            for n in range(files):
                out.write(f"{root}/d{n // PER_FOLDER:05d}/img{n:07d}.jpg\n")
    return listing


def topics_of(count: int, dim: int, seed: int, truth: list[np.ndarray], batch: int = 10_000) -> Iterator[np.ndarray]:
    """Unit vectors in ``count // 50`` known topics (each row's topic appended to ``truth``), in batches."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, count // 50), dim)).astype(np.float32)
    for start in range(0, count, batch):
        n = min(batch, count - start)
        label = rng.integers(0, len(centres), n)
        truth.append(label)
        v = centres[label] + 0.45 * rng.normal(size=(n, dim)).astype(np.float32)
        yield v / np.linalg.norm(v, axis=1, keepdims=True)


def rows_of(start: int, vectors: np.ndarray, folders: int = 10) -> list[dict[str, Any]]:
    from tests.support.rows import row

    return [row(f"{start + i:032x}", f"/corpus/d{(start + i) % folders}/{start + i}.jpg", v) for i, v in enumerate(vectors)]


# --- processes --------------------------------------------------------------------------------------------------
def measured(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, float, str, str]:
    """Run ``cmd`` under a small helper that waits for it alone, so its peak RSS is its own (not an earlier child's)."""
    helper = (
        "import os,resource,subprocess,sys,time,json;t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "print(json.dumps({'s':time.perf_counter()-t,'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,"
        "'rc':p.returncode,'out':p.stdout,'err':p.stderr}))"
    )
    proc = subprocess.run([sys.executable, "-c", helper, *cmd], env=env, cwd=cwd, capture_output=True, text=True)
    result = json.loads(proc.stdout)
    if result["rc"] not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {result['rc']}:\n{result['err'][-3000:]}")
    return result["s"], result["rss"], result["out"], result["err"]


def imsim_cmd(checkout: Path | None) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSIM_")}
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    return [sys.executable, "-m", "imsim.cli"], env


# --- queue: a million-file job ------------------------------------------------------------------------------------
def queue_part(files: int, checkout: Path | None, label: str, appendonly: bool = False) -> dict[str, Any]:
    import redis

    corpus = hardlinked_corpus(files)
    listing = path_list(corpus, files)
    # --appendonly: as docs/operations.md and deploy/ run it (AOF, fsync every second)
    server = RedisServer(Path(tempfile.mkdtemp(prefix="imsim-scale-redis-")), appendonly=appendonly, appendfsync="everysec")
    client = redis.Redis.from_url(server.url, decode_responses=True)
    cli, env = imsim_cmd(checkout)
    here = checkout or ROOT  # `python -m` imports from the working directory first
    data = Path(tempfile.mkdtemp(prefix="imsim-scale-data-"))
    env.update(
        IMSIM_REDIS_URL=server.url,
        IMSIM_QUEUE="scale",
        IMSIM_DATA_DIR=str(data),
        IMSIM_ENV_FILE=os.devnull,
        IMSIM_TASK_EVENTS="false",
        COLUMNS="200",
    )
    out: dict[str, Any] = {"label": label, "files": files}
    try:
        base = int(client.info("memory")["used_memory"])
        seconds, rss, stdout, _ = measured([*cli, "ingest", str(corpus), "--no-wait"], env, here)
        job = stdout.strip().splitlines()[-1]
        queued = int(client.info("memory")["used_memory"]) - base
        out.update(folder_s=seconds, folder_rss_mb=rss, redis_bytes_per_queued_file=queued / files)
        base = int(client.info("memory")["used_memory"])
        seconds, rss, stdout, _ = measured([*cli, "ingest", "--from-file", str(listing), "--no-wait"], env, here)
        listed = stdout.strip().splitlines()[-1]
        out.update(
            list_s=seconds,
            list_rss_mb=rss,
            redis_bytes_per_listed_file=(int(client.info("memory")["used_memory"]) - base) / files,
        )
        before = int(client.llen("scale"))
        seconds, rss, _, _ = measured([*cli, "cancel", listed], env, here)
        # no worker runs: cancel itself takes the job's messages off the queue (the folder job's stay)
        out.update(cancel_s=seconds, cancel_rss_mb=rss, messages_removed=before - int(client.llen("scale")))
        out["messages_of_the_job"] = -(-files // 256)
        # every file of the folder job fails (as one Milvus outage past the retries does): 1M failures recorded
        client.delete("scale")
        seconds = _fail_everything(job, files, server.url, checkout)
        out.update(record_failures_s=seconds)
        keys = [k for k in client.scan_iter(f"imsim:job:{job}*")]
        out["job_keys"] = sorted(k.rsplit(":", 1)[-1] if k.count(":") > 2 else "hash" for k in keys)
        out["job_record_bytes_without_failures"] = sum(
            int(client.memory_usage(k) or 0) for k in keys if not k.endswith((":failures", ":reasons"))
        )
        out["failures_bytes"] = sum(int(client.memory_usage(k) or 0) for k in keys if k.endswith((":failures", ":reasons")))
        # the same number of failures, each reason naming its file (as a decoder's does): a second job
        seconds, _, stdout, _ = measured([*cli, "ingest", "--from-file", str(listing), "--no-wait"], env, here)
        distinct_job = stdout.strip().splitlines()[-1]
        client.delete("scale")
        out["record_distinct_failures_s"] = _fail_everything(distinct_job, files, server.url, checkout, distinct=True)
        distinct_keys = [k for k in client.scan_iter(f"imsim:job:{distinct_job}*") if k.endswith((":failures", ":reasons"))]
        out["distinct_failures_bytes"] = sum(int(client.memory_usage(k) or 0) for k in distinct_keys)
        seconds, rss, _, _ = measured([*cli, "jobs"], env, here)
        out.update(jobs_s=seconds, jobs_rss_mb=rss)
        seconds, rss, _, _ = measured([*cli, "status", job], env, here)
        out.update(status_s=seconds, status_rss_mb=rss)
        if appendonly:  # what the AOF holds after all of it, after Redis rewrites it, and a restart's reload
            out["aof_mb"] = _aof_bytes(server.workdir) / 1e6
            started = time.perf_counter()
            client.bgrewriteaof()
            while int(client.info("persistence")["aof_rewrite_in_progress"]) or int(
                client.info("persistence")["aof_rewrite_scheduled"]
            ):
                time.sleep(0.05)
            out["aof_rewrite_s"] = time.perf_counter() - started
            out["aof_rewritten_mb"] = _aof_bytes(server.workdir) / 1e6
            key_count = int(client.dbsize())
            server.stop()
            started = time.perf_counter()
            server.start()
            while True:
                try:
                    if not int(client.info("persistence")["loading"]):
                        break
                except redis.exceptions.BusyLoadingError:
                    pass
                time.sleep(0.02)
            out["aof_reload_s"] = time.perf_counter() - started
            out["keys_after_restart"] = f"{int(client.dbsize())} of {key_count}"
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    return out


def _aof_bytes(workdir: Path) -> int:
    """The append-only file's bytes (Redis 7 keeps a base and increments in appendonlydir/)."""
    return sum(p.stat().st_size for p in workdir.rglob("appendonly*") if p.is_file())


_FAIL_SCRIPT = """
import json, sys, time
from imsim.jobs.records import JobStore
job, files, url, chunk, distinct = sys.argv[1], int(sys.argv[2]), sys.argv[3], 256, sys.argv[4] == "distinct"
jobs = JobStore(url)
reason = "chunk failed after 20 retries: StoreUnavailable: Milvus at http://milvus:19530 is unreachable or restarting"
def why(path, i):  # one reason for all, or one naming each file (a decoder error does)
    return f"cannot decode {path}: broken data stream at byte {i * 7919 % 100000}" if distinct else reason
for n, start in enumerate(range(0, files, chunk)):
    names = [f"FOLDER/d{i // 1000:05d}/img{i:07d}.jpg" for i in range(start, min(files, start + chunk))]
    jobs.record_chunk(job, str(n), 0, 0, {p: why(p, start + j) for j, p in enumerate(names)})
print(json.dumps(jobs.reads.get(job).state))
"""


def _fail_everything(job: str, files: int, url: str, checkout: Path | None, distinct: bool = False) -> float:
    """Record every chunk of ``job`` as failed, through the (old or new) JobStore's own record path."""
    env = {**os.environ, "PYTHONPATH": str(checkout or ROOT)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", _FAIL_SCRIPT, job, str(files), url, "distinct" if distinct else "same"],
        env=env,
        cwd=checkout or ROOT,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def queue(args: argparse.Namespace) -> None:
    runs = [(None, "now")] + ([(Path(args.checkout), f"checkout {args.checkout}")] if args.checkout else [])
    for files in args.files:
        for checkout, label in runs:
            r = queue_part(files, checkout, label, appendonly=args.appendonly)
            if args.appendonly:
                say(
                    f"{label:>10} | {files:>9,} files | AOF (appendfsync everysec) after queuing a folder and a list, "
                    f"cancelling one and {files:,} + {files:,} failures: {r['aof_mb']:.1f} MB, rewritten in "
                    f"{r['aof_rewrite_s']:.2f} s to {r['aof_rewritten_mb']:.1f} MB; a restart reloaded it in "
                    f"{r['aof_reload_s']:.2f} s ({r['keys_after_restart']} keys)"
                )
            say(
                f"{label:>10} | {files:>9,} files | queue a folder {r['folder_s']:6.1f} s {r['folder_rss_mb']:5.0f} MB | "
                f"--from-file {r['list_s']:6.1f} s {r['list_rss_mb']:5.0f} MB | Redis {r['redis_bytes_per_queued_file']:5.1f} B "
                f"per queued file | cancel {r['cancel_s']:5.2f} s | {files:,} failures: jobs {r['jobs_s']:5.2f} s "
                f"{r['jobs_rss_mb']:4.0f} MB, status {r['status_s']:5.2f} s {r['status_rss_mb']:4.0f} MB | finished record "
                f"{r['job_record_bytes_without_failures']:,} B + failures {r['failures_bytes'] / 1e6:.1f} MB | "
                f"failures with distinct reasons {r['distinct_failures_bytes'] / 1e6:.1f} MB | cancel took "
                f"{r['messages_removed']:,} of the job's {r['messages_of_the_job']:,} messages off the queue"
            )


# --- fromfile: `--from-file` alone, up to 10M listed paths ----------------------------------------------------------
def fromfile(args: argparse.Namespace) -> None:
    """`imsim ingest --from-file LIST --no-wait` of N listed paths into a fresh Redis: the command's time and peak RSS,
    Redis bytes per queued path. The list names files under a folder that holds none (``--from-file`` takes a line as
    a file without opening it; no worker runs, the job is cancelled after): 10M real files would need 10M inodes."""
    import redis

    cli, env = imsim_cmd(None)
    for files in args.files:
        listing = WORK / f"list-unmade-{files}.txt"
        if not listing.exists():
            with open(listing, "w") as out:
                for start in range(0, files, 100_000):
                    out.writelines(
                        f"{WORK}/unmade/d{n // PER_FOLDER:05d}/img{n:08d}.jpg\n"
                        for n in range(start, min(files, start + 100_000))
                    )
        server = RedisServer(Path(tempfile.mkdtemp(prefix="imsim-scale-redis-")))
        client = redis.Redis.from_url(server.url)
        data = Path(tempfile.mkdtemp(prefix="imsim-scale-data-"))
        env.update(IMSIM_REDIS_URL=server.url, IMSIM_QUEUE="scale", IMSIM_DATA_DIR=str(data), IMSIM_ENV_FILE=os.devnull)
        try:
            base = int(client.info("memory")["used_memory"])
            seconds, rss, stdout, _ = measured([*cli, "ingest", "--from-file", str(listing), "--no-wait"], env)
            job = stdout.strip().splitlines()[-1]
            per_file = (int(client.info("memory")["used_memory"]) - base) / files
            total = int(client.hget(f"imsim:job:{job}", "total") or 0)
            cancel_s, _, _, _ = measured([*cli, "cancel", job], env)
            say(
                f"fromfile | {files:>10,} listed paths ({listing.stat().st_size / 1e6:,.0f} MB) | `ingest --from-file "
                f"--no-wait` {seconds:6.1f} s, peak RSS {rss:5.0f} MB | {total:,} queued | Redis {per_file:5.1f} B per "
                f"queued path | cancel {cancel_s:.2f} s, {int(client.llen('scale'))} messages left"
            )
        finally:
            server.stop()
            shutil.rmtree(data, ignore_errors=True)


# --- workers: a job through the queue, real Celery workers into a Milvus server ----------------------------------
def workers(args: argparse.Namespace) -> None:
    """A folder of ``--files`` hard-linked JPEGs queued with `imsim ingest --no-wait` into a Redis with AOF (as deployed),
    then ``--workers`` real `celery -A workers worker` processes (solo pool, the tiny random-weight CLIP and DINOv2:
    the models are not what this measures) into a Milvus 2.3.5 server; printed: the rate from the first worker ready to
    the job finished, the rows stored (each file once per model), the CPU of workers and server, and what the job left
    in Redis (its record, Celery's keys, the AOF)."""
    import redis

    from imsim.bench import process_cpu_seconds
    from imsim.jobs.records import JobStore
    from imsim.models.testing import build_tiny_models
    from imsim.store import VectorStore
    from tests.support.servers import Worker, settings_env
    from tests.support.settings import make_settings

    for files in args.files:
        corpus = hardlinked_corpus(files)
        work = Path(tempfile.mkdtemp(prefix="imsim-scale-workers-"))
        (work / "redis").mkdir()
        broker = RedisServer(work / "redis", appendonly=True, appendfsync="everysec")
        milvus, uri = _server(args)
        running: list[Worker] = []
        try:
            models = build_tiny_models(work / "models")
            settings = make_settings(
                models, work / "data", redis_url=broker.url, milvus_uri=uri, queue="scale-workers", batch_size=64
            )
            env = settings_env(settings) | {"IMSIM_TASK_EVENTS": "false"}
            client = redis.Redis.from_url(broker.url)
            base = int(client.info("memory")["used_memory"])
            queued = subprocess.run(
                [sys.executable, "-m", "imsim.cli", "ingest", str(corpus), "--no-wait"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            job = queued.stdout.strip().splitlines()[-1]
            jobs = JobStore(broker.url)
            server_cpu = process_cpu_seconds(milvus.pid) if milvus is not None else 0.0
            # each worker's forward passes get the cores divided among the workers (OMP_NUM_THREADS, as a CPU
            # deployment should run them): 2 workers of 2 threads each on 2 cores spin against each other
            threads = str(args.threads or max(1, (os.cpu_count() or 1) // args.workers))
            worker_env = {"IMSIM_TASK_EVENTS": "false", "OMP_NUM_THREADS": threads}
            running = [Worker(settings, work / f"w{i}.log", f"w{i}", env=worker_env) for i in range(args.workers)]
            started = time.perf_counter()
            while not (status := jobs.reads.get(job)).finished_at:
                time.sleep(0.5)
            seconds = time.perf_counter() - started
            worker_cpu = sum(process_cpu_seconds(w.proc.pid) for w in running)
            server_cpu = (process_cpu_seconds(milvus.pid) - server_cpu) if milvus is not None else 0.0
            store = VectorStore(settings)
            rows = {name: store.rows.count(collection) for name, collection in status.collections.items()}
            store.close()
            if status.failed:
                say(f"  failures, e.g.: {jobs.reads.get(job, failures=3).failures}")
            celery_keys = sum(1 for _ in client.scan_iter("celery-task-meta-*"))
            job_keys = list(client.scan_iter(f"imsim:job:{job}*"))
            record = sum(int(client.memory_usage(k) or 0) for k in job_keys)
            say(
                f"workers | {files:>9,} files | {args.workers} workers x {threads} threads | {status.done:,} done, "
                f"{status.failed} failed in {seconds:.1f} s: {status.done / seconds:.1f} images/s | rows {rows} | "
                f"CPU-ms/image: workers {1000 * worker_cpu / files:.2f}, Milvus server {1000 * server_cpu / files:.2f} | "
                f"Redis after: {(int(client.info('memory')['used_memory']) - base) / 1e6:.2f} MB more than before queuing, "
                f"job record {record:,} B in {len(job_keys)} keys, {celery_keys} Celery result keys, AOF "
                f"{_aof_bytes(work / 'redis') / 1e6:.1f} MB"
            )
        finally:
            for w in running:
                w.stop()
            broker.stop()
            if milvus is not None:
                milvus.kill()


# --- grown: ingest into a collection that already holds N rows ------------------------------------------------------
def grown(args: argparse.Namespace) -> None:
    """`imsim bench ingest`'s pipeline (null models, ``--images`` generated 1024x768 JPEGs, the skip check on) into a
    fresh Milvus 2.3.5 server whose two collections (512-d and 768-d, as CLIP and DINOv2) already hold N rows, for each
    N of ``--rows``; a no-op sink before and after. Printed: images/s without and with the job's seal counted, the
    store waits, the server's CPU. The filled collections get a FLAT index: its build is free, so the server's CPU
    here is the ingest's, not an index build's (on a deployment index nodes have their own)."""
    from imsim import bench
    from imsim.ingest import Ingestor, ingest_local
    from imsim.settings import load
    from imsim.store import VectorStore

    files = bench.corpus(None, args.images, (1024, 768), WORK / f"grown-{args.images}")
    models = bench.null_models()

    def run(store: Any, settings: Any, pid: int | None) -> dict[str, float]:
        with Ingestor(settings, embedders=models, store=store) as ingestor:
            ingestor.ingest(files[:16], job_id="warmup")
            cpu = bench.process_cpu_seconds(pid) if pid else 0.0
            started = time.perf_counter()
            result = ingest_local(files[16:], settings, ingestor=ingestor, job_id="grown", seal=False)
            seconds = time.perf_counter() - started
            sealed = time.perf_counter()
            ingestor.seal()
            seal_s = time.perf_counter() - sealed
            assert result.done == len(files) - 16, result.failures
            return {
                "rate": result.done / seconds,
                "sealed_rate": result.done / (seconds + seal_s),
                "seal_s": seal_s,
                "write_wait_ms": 1000 * result.times.wait.get("write", 0.0) / result.done,
                "lookup_wait_ms": 1000 * result.times.wait.get("lookup", 0.0) / result.done,
                "server_cpu_ms": 1000 * (bench.process_cpu_seconds(pid) - cpu) / result.done if pid else 0.0,
            }

    base = load({"env_file": os.devnull, "data_dir": tempfile.mkdtemp(), "index_type": "FLAT"})
    noop = run(bench.NullStore(), base, None)
    say(f"grown | no-op sink | {noop['rate']:.1f} images/s")
    for rows in args.rows:
        server = MilvusServer(Path(tempfile.mkdtemp(prefix="imsim-scale-grown-")))
        try:
            settings = base.replace(milvus_uri=server.uri, collection_prefix=f"grown{uuid.uuid4().hex[:6]}")
            store = VectorStore(settings)
            started = time.perf_counter()
            for model in models.values():
                name = store.versions.ensure_collection(model.info)
                for done, vectors in _batches(clustered(rows, model.info.dim, seed=model.info.dim)):
                    store.rows.upsert(name, rows_of(done, vectors), batch=2000)
                store.rows.flush(name)
                _wait_indexed(store, name, rows)
            fill_s = time.perf_counter() - started
            idle_s = _wait_idle(server.pid)  # the fill's compaction and index builds done: the server's CPU is the ingest's
            r = run(store, settings, server.pid)
            counts = {name: store.rows.count(name) for name in store.versions.collections()}
            store.close()
            say(
                f"grown | Milvus 2.3.5 server holding {rows:>9,} rows a collection | {r['rate']:.1f} images/s, "
                f"{r['sealed_rate']:.1f} with the seal ({r['seal_s']:.3f} s) counted | waits {r['write_wait_ms']:.3f} ms/image "
                f"(writes), {r['lookup_wait_ms']:.3f} (skip-check reads) | server CPU {r['server_cpu_ms']:.2f} ms/image | "
                f"rows after {counts} | (filled in {fill_s:.0f} s, then idle after {idle_s:.0f} s)"
            )
        finally:
            server.kill()
    noop = run(bench.NullStore(), base, None)
    say(f"grown | no-op sink | {noop['rate']:.1f} images/s")


def _wait_idle(pid: int, below: float = 0.12, period: float = 10.0, timeout: float = 900.0) -> float:
    """Seconds until a process uses under ``below`` of a core over ``period`` seconds (at most ``timeout``)."""
    from imsim.bench import process_cpu_seconds

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        cpu = process_cpu_seconds(pid)
        time.sleep(period)
        if process_cpu_seconds(pid) - cpu < below * period:
            break
    return time.perf_counter() - started


def _batches(vectors: Iterator[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    done = 0
    for block in vectors:
        yield done, block
        done += len(block)


# --- sync: an unchanged tree ---------------------------------------------------------------------------------------
def sync(args: argparse.Namespace) -> None:
    from imsim import bench, maintenance
    from imsim.ingest import Ingestor, ingest_local
    from imsim.settings import load
    from imsim.sources.paths import Discovery, iter_files
    from imsim.store import VectorStore

    milvus, uri = _server(args)
    try:
        for files in args.files:
            corpus = hardlinked_corpus(files)
            settings = load(
                {
                    "milvus_uri": uri,
                    "collection_prefix": f"sync{uuid.uuid4().hex[:6]}",
                    "data_dir": tempfile.mkdtemp(),
                    "env_file": os.devnull,
                    "chunk_size": 1024,
                    "batch_size": 256,
                }
            )
            store = VectorStore(settings)
            with Ingestor(settings, embedders=bench.null_models(), store=store) as ingestor:
                started = time.perf_counter()
                first = ingest_local(iter_files([corpus], Discovery()), settings, ingestor=ingestor)
                ingest_s = time.perf_counter() - started
                started = time.perf_counter()
                gone = maintenance.remove_missing(store, [str(corpus)])
                again = ingest_local(iter_files([corpus], Discovery()), settings, ingestor=ingestor)
                sync_s = time.perf_counter() - started
                for name in store.versions.collections():
                    store.drop(name)
            store.close()
            say(
                f"sync | {files:>9,} files | first ingest (null models) {ingest_s:7.1f} s, {first.done:,} stored, "
                f"{first.read_bytes / 1e6:.1f} MB read | sync of the unchanged tree {sync_s:6.1f} s: {gone.total} gone, "
                f"{again.skipped:,} unchanged, {again.done} embedded, {again.read_bytes} bytes of file content read"
            )
    finally:
        if milvus is not None:
            milvus.kill()


def _server(args: argparse.Namespace) -> tuple[MilvusServer | None, str]:
    if args.uri:
        return None, args.uri
    server = MilvusServer(Path(tempfile.mkdtemp(prefix="imsim-scale-milvus-")))
    return server, server.uri


# --- duplicates ---------------------------------------------------------------------------------------------------
_DUPLICATES_SCRIPT = """
import json, sys, time
from imsim.duplicates import neighbour_edges, groups_of
from imsim.settings import load
from imsim.store import VectorStore
uri, prefix, name = sys.argv[1:4]
store = VectorStore(load({"milvus_uri": uri, "collection_prefix": prefix, "env_file": "/dev/null"}))
started = time.perf_counter()
paths, edges = neighbour_edges(store, {"m": name}, 0.95, neighbours=16)
groups = groups_of(paths, edges)
import resource
out = {"seconds": time.perf_counter() - started, "edges": len(edges), "groups": len(groups),
       "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # before the check below
if sys.argv[4] == "exact":  # brute force for a sample of rows: which of their edges the graph has
    import faiss
    import numpy as np
    ids, vectors = [], []
    for rows in store.rows.iter_rows(name, output_fields=["vector"], batch=4000, consistency="Bounded"):
        ids += [r["id"] for r in rows]
        vectors.append(np.stack([r["vector"] for r in rows]))
    vectors = np.concatenate(vectors)
    sample = np.random.default_rng(0).choice(len(ids), min(len(ids), 5000), replace=False)
    scores, found = faiss.knn(vectors[sample], vectors, 17, faiss.METRIC_INNER_PRODUCT)
    pairs = [(q, p) for q, line, s in zip(sample, found, scores) for p, v in zip(line, s) if p != q and v >= 0.95]
    want = {tuple(sorted((ids[q], ids[p]))) for q, p in pairs}
    got = {(a, b) for a, b, _ in edges}
    out["exact_edges"] = len(want)
    out["edge_recall"] = len(want & got) / max(1, len(want))
print(json.dumps(out))
"""


@contextlib.contextmanager
def _a_store(args: argparse.Namespace) -> Iterator[str]:
    """A fresh store for one run, its URI: Milvus Lite behind `imsim store serve` with ``--lite``, else a server."""
    milvus, uri = (None, "") if args.lite else _server(args)
    lite_server = MilvusLiteServer(Path(tempfile.mkdtemp(prefix="imsim-scale-lite-"))) if args.lite else None
    try:
        yield lite_server.uri if lite_server else uri
    finally:
        if milvus is not None:
            milvus.kill()
        if lite_server is not None:
            lite_server.kill()


def duplicates(args: argparse.Namespace) -> None:
    from imsim.settings import load

    for rows in args.rows:
        with _a_store(args) as uri:
            prefix = f"dup{uuid.uuid4().hex[:6]}"
            fill_settings = {"milvus_uri": uri, "collection_prefix": prefix, "env_file": os.devnull, "index_type": args.index}
            name, fill_s = _fill(load(fill_settings), rows, 768)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            check = "exact" if args.check_exact else "-"
            _, _, out, _ = measured([sys.executable, "-c", _DUPLICATES_SCRIPT, uri, prefix, name, check], env)
            result = json.loads(out)
            if "edge_recall" in result:
                recall, exact = result["edge_recall"], result["exact_edges"]
                say(f"  the graph has {recall:.4f} of the {exact:,} edges brute force finds from 5,000 sampled rows")
            say(
                f"duplicates | {'Milvus Lite (store serve)' if args.lite else 'Milvus 2.3.5 server'} | {rows:>9,} rows x 768 | "
                f"{result['seconds']:7.1f} s ({rows / result['seconds']:,.0f} rows/s), peak RSS {result['peak_mb']:,.0f} MB | "
                f"{result['edges']:,} edges, {result['groups']:,} groups | (filling took {fill_s:.0f} s)"
            )


_CLUSTERS_SCRIPT = """
import json, sys, time
import numpy as np
from imsim.analysis import clusters as kmeans
from imsim.settings import load
from imsim.store import VectorStore
uri, prefix, name, k, truth_file = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
store = VectorStore(load({"milvus_uri": uri, "collection_prefix": prefix, "env_file": "/dev/null"}))
started = time.perf_counter()
found, stream = kmeans.cluster(store, name, k, measure_fit=False)
trained = time.perf_counter() - started
labels = {}
for ids, clusters, _ in stream:
    labels.update(zip(ids, clusters.tolist()))
seconds = time.perf_counter() - started
truth = np.load(truth_file)
order = sorted(labels)
found_labels = np.array([labels[i] for i in order])
truth_labels = truth[[int(i, 16) for i in order]]
print(json.dumps({"seconds": seconds, "train_s": trained, "sample": found.sample,
                  "ari": kmeans.adjusted_rand_index(truth_labels, found_labels)}))
"""


def clusters(args: argparse.Namespace) -> None:
    """k-means topics of N synthetic rows in N/50 known topics (768-d): time, peak RSS and the adjusted Rand index."""
    from imsim.settings import load

    for rows in args.rows:
        with _a_store(args) as uri:
            prefix = f"clu{uuid.uuid4().hex[:6]}"
            truth_file = WORK / f"truth-{prefix}.npy"
            settings = load({"milvus_uri": uri, "collection_prefix": prefix, "env_file": os.devnull})
            name, fill_s = _fill(settings, rows, 768, labelled=truth_file)
            k = args.k or max(2, rows // 50)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            _, rss, out, _ = measured([sys.executable, "-c", _CLUSTERS_SCRIPT, uri, prefix, name, str(k), str(truth_file)], env)
            r = json.loads(out)
            say(
                f"clusters | {'Milvus Lite (store serve)' if args.lite else 'Milvus 2.3.5 server'} | {rows:>9,} rows x 768 "
                f"into {k:,} topics ({rows // 50:,} known) | {r['seconds']:7.1f} s (centres from {r['sample']:,} rows in "
                f"{r['train_s']:.1f} s), peak RSS {rss:,.0f} MB | adjusted Rand {r['ari']:.3f} | (filling took {fill_s:.0f} s)"
            )


def _fill(settings: Any, rows: int, dim: int, seed: int = 1, name: str = "", labelled: Path | None = None) -> tuple[str, float]:
    """A collection of ``rows`` clustered synthetic rows, indexed; returns (name, seconds it took). ``labelled``: the
    rows are in ``rows // 50`` topics without near copies, and each row's topic is saved there (by row index)."""
    from imsim.bench import NULL_MODELS, NullEmbedder  # noqa: I001
    from imsim.models.base import ModelInfo
    from imsim.store import VectorStore

    store = VectorStore(settings)
    info: ModelInfo = NullEmbedder("dinov2" if dim == 768 else "clip", *NULL_MODELS["dinov2" if dim == 768 else "clip"]).info
    name = store.versions.ensure_collection(info)
    started = time.perf_counter()
    done = 0
    truth: list[np.ndarray] = []
    for vectors in clustered(rows, dim, seed) if labelled is None else topics_of(rows, dim, seed, truth):
        store.rows.upsert(name, rows_of(done, vectors), batch=2000)
        done += len(vectors)
    if labelled is not None:
        np.save(labelled, np.concatenate(truth))
    store.rows.flush(name)
    _wait_indexed(store, name, rows)
    store.close()
    return name, time.perf_counter() - started


def _wait_indexed(store: Any, name: str, rows: int, timeout: float = 1200) -> None:
    """Until the server reports nothing pending (or its indexed count stops moving for a minute: compaction makes the
    counts differ from the rows written), at most ``timeout`` seconds."""
    deadline, last, still = time.time() + timeout, -1, time.time()
    while time.time() < deadline:
        state = store.versions.index_state(name)
        if "pending_index_rows" not in state or state.get("pending_index_rows") == 0:
            return
        indexed = int(state.get("indexed_rows", 0))
        if indexed != last:
            last, still = indexed, time.time()
        elif time.time() - still > 60:
            return
        time.sleep(2)


# --- copy ---------------------------------------------------------------------------------------------------------
def copy(args: argparse.Namespace) -> None:
    from imsim.settings import load
    from imsim.store import VectorStore
    from imsim.store.copy import copy_store

    for rows in args.rows:
        milvus, uri = _server(args)
        data = Path(tempfile.mkdtemp(prefix="imsim-scale-copy-"))
        lite = load(
            {"milvus_uri": str(data / "milvus.db"), "collection_prefix": "copy", "env_file": os.devnull, "data_dir": data}
        )
        try:
            fill = sum(_fill(lite, rows, dim, seed=dim)[1] for dim in (512, 768))
            source, target = VectorStore(lite), VectorStore(lite.replace(milvus_uri=uri))
            started = time.perf_counter()
            report = copy_store(source, target, data, batch=2000)
            seconds = time.perf_counter() - started
            say(
                f"copy | {rows:>9,} rows x 2 models (512-d + 768-d) Lite -> Milvus 2.3.5 | {seconds:7.1f} s "
                f"({2 * rows / seconds:,.0f} rows/s) | counts equal: "
                f"{all(c.rows == c.target_rows for c in report.collections)}, sampled vectors bit-identical: "
                f"{sum(c.identical for c in report.collections)}/{sum(c.sampled for c in report.collections)}, "
                f"aliases {len(report.aliases)} | (filling Lite took {fill:.0f} s)"
            )
            source.close()
            target.close()
        finally:
            if milvus is not None:
                milvus.kill()
            shutil.rmtree(data, ignore_errors=True)


# --- whiten -------------------------------------------------------------------------------------------------------
_WHITEN_SCRIPT = """
import json, sys, tempfile, time
from pathlib import Path
from imsim.settings import load
from imsim.store import VectorStore, derived
from imsim.store.mirror import Checkpoints, mirror
uri, prefix, name = sys.argv[1:4]
store = VectorStore(load({"milvus_uri": uri, "collection_prefix": prefix, "env_file": "/dev/null"}))
data = Path(tempfile.mkdtemp())
started = time.perf_counter()
whitening = derived.learn(store, name)
learned = time.perf_counter() - started
target = derived.register(store, name, whitening)
started = time.perf_counter()
report = derived.write(store, name, target, whitening, Checkpoints(data, "bench"))
written = time.perf_counter() - started
# the same rows mirrored without a transform into a plain copy on the same server: the `imsim store copy` path's rate
copy = name + "_copy"
index = ("HNSW", {"M": 16, "efConstruction": 200})
dim = store.versions.dimension(name)
store.versions.create_version(copy, dim, description="copy", vector_doc="copy", index=index, properties={})
started = time.perf_counter()
mirror(store, name, store, copy, Checkpoints(data, "copy"), batch=2000)
copied = time.perf_counter() - started
print(json.dumps({"learn": learned, "rows": whitening.rows, "write": written, "written": report.written,
                  "verified": report.verified, "copy": copied}))
"""


def whiten(args: argparse.Namespace) -> None:
    from imsim.settings import load

    for rows in args.rows:
        milvus, uri = _server(args)
        try:
            prefix = f"wh{uuid.uuid4().hex[:6]}"
            fill_settings = {"milvus_uri": uri, "collection_prefix": prefix, "env_file": os.devnull, "index_type": args.index}
            name, fill_s = _fill(load(fill_settings), rows, 768)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            _, rss, out, err = measured([sys.executable, "-c", _WHITEN_SCRIPT, uri, prefix, name], env)
            if not out.strip():
                raise SystemExit(err[-3000:])
            r = json.loads(out)
            say(
                f"whiten | Milvus 2.3.5 server | {rows:>9,} rows x 768 | learn {r['learn']:6.1f} s ({r['rows']:,} rows, "
                f"{r['rows'] / r['learn']:,.0f} rows/s) | write {r['write']:7.1f} s ({r['written'] / r['write']:,.0f} rows/s, "
                f"verified {r['verified']}) | plain copy of the same rows {r['copy']:7.1f} s ({rows / r['copy']:,.0f} rows/s) | "
                f"peak RSS {rss:,.0f} MB | (filling took {fill_s:.0f} s)"
            )
        finally:
            if milvus is not None:
                milvus.kill()


# --- delete -------------------------------------------------------------------------------------------------------
def delete(args: argparse.Namespace) -> None:
    from imsim import maintenance
    from imsim.settings import load
    from imsim.store import VectorStore

    for rows in args.rows:
        data = Path(tempfile.mkdtemp(prefix="imsim-scale-delete-"))
        settings = load({"milvus_uri": str(data / "milvus.db"), "collection_prefix": "del", "env_file": os.devnull})
        try:
            _fill(settings, rows, 768)
            store = VectorStore(settings)
            timings = []
            for selector in ("/corpus/d1", "/corpus/d[23]/**", "/corpus/d4/**"):
                chosen = [maintenance.resolve(store, selector)]
                started = time.perf_counter()
                matched = max(maintenance.count(store, chosen).values())
                sample = maintenance.sample(store, chosen)
                removed = max(maintenance.delete(store, chosen).values())
                timings.append(f"{selector!r}: {matched:,} rows, {time.perf_counter() - started:5.1f} s ({len(sample)} shown)")
                assert removed == matched
            say(f"delete | Milvus Lite file | {rows:>9,} rows | " + "; ".join(timings))
            store.close()
        finally:
            shutil.rmtree(data, ignore_errors=True)


# --- Milvus Lite's envelope ----------------------------------------------------------------------------------------
def lite(args: argparse.Namespace) -> None:
    from imsim.bench import NULL_MODELS, NullEmbedder, process_cpu_seconds  # noqa: I001
    from imsim.models.base import ModelInfo
    from imsim.settings import load
    from imsim.store import VectorStore

    rows = max(args.rows)
    server = MilvusLiteServer(Path(tempfile.mkdtemp(prefix="imsim-scale-lite-")))
    try:
        store = VectorStore(load({"milvus_uri": server.uri, "collection_prefix": "env", "env_file": os.devnull}))
        infos: dict[str, ModelInfo] = {n: NullEmbedder(n, *NULL_MODELS[n]).info for n in ("clip", "dinov2")}
        names = {n: store.versions.ensure_collection(info) for n, info in infos.items()}
        streams = {n: clustered(rows, info.dim, seed=i, batch=1000) for i, (n, info) in enumerate(infos.items())}
        done, step, mark = 0, max(1, rows // 4), time.perf_counter()
        while done < rows:
            for n, stream in streams.items():
                store.rows.upsert(names[n], rows_of(done, next(stream)), batch=1000)
            done += 1000
            if done % step == 0 or done >= rows:
                seconds = time.perf_counter() - mark
                rss = _rss_mb(server.proc.pid)
                say(
                    f"lite | {done:>9,} images (x2 collections) | writes {2 * step / seconds:6.0f} rows/s over the last "
                    f"{step:,} images | server RSS {rss:,.0f} MB | server CPU {process_cpu_seconds(server.proc.pid):.0f} s"
                )
                mark = time.perf_counter()
        for name in names.values():
            store.rows.flush(name)
        query = next(clustered(64, infos["dinov2"].dim, seed=9))
        times = []
        for v in query:
            started = time.perf_counter()
            store.searching.search(names["dinov2"], v[None], 10, consistency="Bounded")
            times.append(1000 * (time.perf_counter() - started))
        say(f"lite | {rows:>9,} images | raw search of the 768-d collection, k=10: p50 {statistics.median(times):.1f} ms")
        store.close()
    finally:
        server.kill()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    for name, default in (("queue", [10_000]), ("sync", [10_000]), ("workers", [10_000]), ("fromfile", [1_000_000])):
        p = sub.add_parser(name)
        p.add_argument("--workers", type=int, default=2, help="workers: Celery worker processes")
        p.add_argument("--threads", type=int, default=0, help="workers: OMP_NUM_THREADS each (default: cores / workers)")
        p.add_argument("--files", type=int, nargs="+", default=default)
        p.add_argument("--checkout", default="")
        p.add_argument("--uri", default="")
        p.add_argument("--appendonly", action="store_true", help="queue: Redis with AOF, as deploy/ runs it")
    p = sub.add_parser("grown")
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--images", type=int, default=4096, help="generated 1024x768 JPEGs ingested at each size")
    for name in ("duplicates", "copy", "delete", "lite", "whiten", "clusters"):
        p = sub.add_parser(name)
        p.add_argument("--rows", type=int, nargs="+", default=[10_000])
        p.add_argument("--uri", default="")
        p.add_argument("--lite", action="store_true", help="duplicates: on Milvus Lite (behind `imsim store serve`)")
        p.add_argument("--check-exact", action="store_true", help="duplicates: brute-force 5,000 sampled rows' edges, for recall")
        p.add_argument("--k", type=int, default=0, help="clusters: topics to make (default: rows / 50, the known ones)")
        p.add_argument("--index", default="auto", help="duplicates: the filled collection's index (FLAT: no build to wait for)")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    parts = {"queue": queue, "sync": sync, "duplicates": duplicates, "copy": copy, "delete": delete, "lite": lite}
    parts["whiten"] = whiten
    parts["clusters"] = clusters
    parts["workers"] = workers
    parts["grown"] = grown
    parts["fromfile"] = fromfile
    parts[args.part](args)


if __name__ == "__main__":
    main()
