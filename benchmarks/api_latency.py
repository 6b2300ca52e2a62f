"""`imsim serve` under load, against the same search in process: the three targets of issue 27.

On loopback, in one run, over a store holding the bundled samples (served by `imsim store serve`, so the API
process and this one share it):

1. **HTTP vs in process**: p50 of an image search (the same photo, k=10) through ``POST /v1/search/image`` against
   :meth:`imsim.Client.search` of the same bytes in this process, interleaved (both processes alive, the order
   alternating); targets: HTTP p50 ≤ 1.2× in-process p50 (issue 27) and in-process ≤ 1.2× HTTP (issue 36).
2. **Concurrency**: one client for ``--solo-seconds``, then ``--clients`` clients for ``--seconds`` (each sends its
   next query when the last is answered; one persistent connection each): errors, throughput against one client's
   (target ≥ 1.5×), p99 against p50 (target ≤ 3×), and the server's RSS sampled each second, flat within ±5 % from
   the 10th second on.
3. **The CLI through the service**: `imsim search PHOTO` with ``IMSIM_API_URL`` set, wall time from the shell
   (median of 5; target ≤ 1.5 s).

Models: CLIP ViT-B/32 and DINOv2 ViT-B/14 at their published sizes with random weights (what a forward pass costs
does not depend on the weights), on CPU unless ``--device``. ``--tiny`` uses the test models (a smoke run).

    python benchmarks/api_latency.py                      # the issue's run: 8 clients, 60 s
    python benchmarks/api_latency.py --tiny --seconds 10  # quick
    python benchmarks/api_latency.py --json out.json

Bounded: the store holds the 38 bundled samples; every phase has a fixed count or duration.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.servers import free_port, settings_env  # noqa: E402

SAMPLES = ROOT / "samples"
PHOTO = SAMPLES / "photos" / "chelsea.jpg"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("VmRSS")).split()[1]) / 1024


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class HttpClient:
    """One persistent connection posting the same multipart image query."""

    def __init__(self, port: int, body: bytes, content_type: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.body, self.content_type = body, content_type

    def search(self) -> float:
        started = time.perf_counter()
        self.conn.request("POST", "/v1/search/image", self.body, {"Content-Type": self.content_type})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        return time.perf_counter() - started


def trend(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y): growth per second."""
    if len(points) < 2:
        return 0.0
    mt = statistics.fmean(t for t, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else 0.0


def batch_sizes(port: int) -> dict[str, float]:
    """The server's own count of image queries per forward pass (its /metrics), over the whole run."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(("imsim_api_batch_size_sum", "imsim_api_batch_size_count"))
    }
    count = values.get("imsim_api_batch_size_count", 0.0)
    return {"passes": count, "mean": values.get("imsim_api_batch_size_sum", 0.0) / count if count else 0.0}


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"imsim serve exited {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("imsim serve not ready in time")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of the concurrent phase")
    parser.add_argument("--solo-seconds", type=float, default=20.0, help="duration of the one-client phase")
    parser.add_argument("--queries", type=int, default=30, help="sequential queries for the p50 comparison")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny test models (a smoke run)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from imsim.client.local import Client
    from imsim.ingest import ingest_local
    from imsim.models.testing import build_random_models, build_tiny_models
    from imsim.settings import load
    from imsim.sources.paths import discover

    tmp = Path(tempfile.mkdtemp(prefix="imsim-api-bench-"))
    models = build_tiny_models(tmp / "models") if args.tiny else build_random_models(tmp / "models")
    store_port, api_port, redis_port = free_port(), free_port(), free_port()
    base = {f"{name}_model": str(path) for name, path in models.items()}
    settings = load(
        base
        | dict(
            data_dir=tmp / "data",
            device=args.device,
            milvus_uri=f"http://127.0.0.1:{store_port}",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",  # /readyz wants Redis (the API queues jobs too)
            env_file=tmp / "none.env",
        )
    )
    env = settings_env(settings)
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, Any] = {"models": "tiny" if args.tiny else "random-weight CLIP B/32 + DINOv2 B/14", "device": args.device}
    try:
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp)],
                stdout=subprocess.DEVNULL,
            )
        )
        store = subprocess.Popen(
            [sys.executable, "-m", "imsim.cli", "store", "serve", "--port", str(store_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(store)
        say(f"models in {tmp / 'models'}; starting imsim store serve")
        deadline = time.monotonic() + 60
        while True:
            try:
                import socket

                socket.create_connection(("127.0.0.1", store_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("imsim store serve did not start") from None
                time.sleep(0.3)
        say("store up; ingesting the samples")
        files = discover([SAMPLES]).files
        ingest_local(files, settings)
        say(f"{len(files)} images stored; in-process queries")
        data = PHOTO.read_bytes()

        # 1. in process: the same bytes through Client.search (decode, embed with each model, search, fuse); first
        # alone, then interleaved with the HTTP queries below (both processes alive, as a user's script beside a serve)
        client = Client(settings)
        for _ in range(3):
            client.search(data, k=10)
        alone = []
        for _ in range(args.queries):
            started = time.perf_counter()
            client.search(data, k=10)
            alone.append(time.perf_counter() - started)

        server = subprocess.Popen(
            [sys.executable, "-m", "imsim.cli", "serve", "--port", str(api_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "serve.log", "w"),  # noqa: SIM115 - the child owns it
        )
        procs.append(server)
        say("waiting for imsim serve")
        wait_ready(api_port, server)
        say("HTTP queries")
        import httpx  # the multipart body RemoteClient sends, encoded once

        request = httpx.Request("POST", "http://api/v1/search/image", data={"k": "10"}, files={"image": ("chelsea.jpg", data)})
        body, kind = request.read(), request.headers["content-type"]
        one = HttpClient(api_port, body, kind)
        for _ in range(3):
            one.search()
        local, http_times = [], []
        for n in range(args.queries):  # interleaved, the order alternating: neither side always follows the other
            for side in ("local", "http") if n % 2 else ("http", "local"):
                if side == "http":
                    http_times.append(one.search())
                else:
                    started = time.perf_counter()
                    client.search(data, k=10)
                    local.append(time.perf_counter() - started)
        client.close()
        results["in_process_alone_p50_ms"] = 1000 * statistics.median(alone)
        results["in_process_p50_ms"] = 1000 * statistics.median(local)
        results["http_p50_ms"] = 1000 * statistics.median(http_times)
        results["http_over_in_process"] = results["http_p50_ms"] / results["in_process_p50_ms"]
        results["in_process_over_http"] = results["in_process_p50_ms"] / results["http_p50_ms"]

        # 2. one client, then N clients, back to back
        def run(clients: int, seconds: float) -> tuple[list[float], int, list[tuple[float, float]]]:
            latencies: list[float] = []
            errors = [0]
            lock = threading.Lock()
            stop_at = time.monotonic() + seconds
            start_gate = threading.Barrier(clients + 1)

            def loop() -> None:
                mine = HttpClient(api_port, body, kind)
                start_gate.wait()
                while time.monotonic() < stop_at:
                    try:
                        took = mine.search()
                    except (OSError, RuntimeError, http.client.HTTPException):
                        with lock:
                            errors[0] += 1
                        mine = HttpClient(api_port, body, kind)
                        continue
                    with lock:
                        latencies.append(took)

            threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
            for t in threads:
                t.start()
            start_gate.wait()
            began = time.monotonic()
            rss: list[tuple[float, float]] = []
            while time.monotonic() < stop_at:
                rss.append((time.monotonic() - began, rss_mb(server.pid)))
                time.sleep(1.0)
            for t in threads:
                t.join()
            return latencies, errors[0], rss

        say(f"one client for {args.solo_seconds:g} s")
        solo, solo_errors, _ = run(1, args.solo_seconds)
        say(f"{args.clients} clients for {args.seconds:g} s")
        many, many_errors, rss = run(args.clients, args.seconds)
        say("the CLI through the service")
        solo_rate = len(solo) / args.solo_seconds
        many_rate = len(many) / args.seconds
        settled = [mb for t, mb in rss if t >= 10] or [mb for _, mb in rss]
        results.update(
            solo_qps=solo_rate,
            clients=args.clients,
            seconds=args.seconds,
            concurrent_qps=many_rate,
            speedup=many_rate / solo_rate,
            errors=solo_errors + many_errors,
            concurrent_p50_ms=1000 * pct(many, 50),
            concurrent_p99_ms=1000 * pct(many, 99),
            p99_over_p50=pct(many, 99) / pct(many, 50),
            rss_at_10s_mb=settled[0],
            rss_min_mb=min(settled),
            rss_max_mb=max(settled),
            rss_median_mb=statistics.median(settled),
            # flat: every sample from the 10th second within ±5 % of their median; the trend tells growth from noise
            rss_drift=max(abs(mb - statistics.median(settled)) for mb in settled) / statistics.median(settled),
            rss_trend_mb_per_min=60 * trend([(t, mb) for t, mb in rss if t >= 10]),
            rss_series_mb=[(round(t, 1), round(mb, 1)) for t, mb in rss],
            batch_sizes=batch_sizes(api_port),
        )

        # 3. the CLI: through the warm service named by IMSIM_API_URL; found by itself (the data dir's running serve,
        # no variable: the default path); and cold, loading the models itself (IMSIM_API_URL=off)
        def cli_walls(extra: dict[str, str], runs: int) -> tuple[float, str]:
            walls, said = [], ""
            for _ in range(runs):
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "imsim.cli", "search", str(PHOTO), "-k", "5"],
                    env=env | extra,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                walls.append(time.perf_counter() - started)
                said = done.stderr
            return statistics.median(walls), said

        results["cli_wall_s"], _ = cli_walls({"IMSIM_API_URL": f"http://127.0.0.1:{api_port}"}, 5)
        results["cli_found_wall_s"], said = cli_walls({"IMSIM_API_URL": ""}, 5)
        results["cli_found_the_serve"] = "asking the running imsim serve" in said
        results["cli_cold_wall_s"], _ = cli_walls({"IMSIM_API_URL": "off"}, 2)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    checks = [
        ("HTTP p50 / in-process p50", results["http_over_in_process"], "≤ 1.2", results["http_over_in_process"] <= 1.2),
        (
            "in-process p50 / HTTP p50 (interleaved)",
            results["in_process_over_http"],
            "≤ 1.2",
            results["in_process_over_http"] <= 1.2,
        ),
        (f"{args.clients} clients / 1 client throughput", results["speedup"], "≥ 1.5", results["speedup"] >= 1.5),
        ("concurrent p99 / p50", results["p99_over_p50"], "≤ 3", results["p99_over_p50"] <= 3),
        ("errors", results["errors"], "= 0", results["errors"] == 0),
        ("server RSS from 10 s: max |RSS - median| / median", results["rss_drift"], "≤ 0.05", results["rss_drift"] <= 0.05),
        ("`imsim search` via IMSIM_API_URL (s)", results["cli_wall_s"], "≤ 1.5", results["cli_wall_s"] <= 1.5),
        ("`imsim search`, the serve found by itself (s)", results["cli_found_wall_s"], "≤ 2", results["cli_found_wall_s"] <= 2),
    ]
    print(f"models: {results['models']} on {args.device}; store: imsim store serve (Milvus Lite), {len(files)} images")
    print(
        f"in-process p50 {results['in_process_p50_ms']:.1f} ms interleaved with HTTP p50 {results['http_p50_ms']:.1f} ms "
        f"({args.queries} each, alternating); in-process alone, before the server started: "
        f"{results['in_process_alone_p50_ms']:.1f} ms"
    )
    print(
        f"1 client {results['solo_qps']:.2f} q/s; {args.clients} clients {results['concurrent_qps']:.2f} q/s "
        f"(p50 {results['concurrent_p50_ms']:.0f} ms, p99 {results['concurrent_p99_ms']:.0f} ms); "
        f"server RSS {results['rss_min_mb']:.0f}-{results['rss_max_mb']:.0f} MB from 10 s (median "
        f"{results['rss_median_mb']:.0f}, trend {results['rss_trend_mb_per_min']:+.1f} MB/min); "
        f"{results['batch_sizes']['mean']:.2f} queries per forward pass on average"
    )
    print(
        f"`imsim search PHOTO -k 5` wall (median): {results['cli_wall_s']:.2f} s with IMSIM_API_URL, "
        f"{results['cli_found_wall_s']:.2f} s finding the serve by itself (found: {results['cli_found_the_serve']}), "
        f"{results['cli_cold_wall_s']:.2f} s cold (IMSIM_API_URL=off: loads the models)"
    )
    print("server RSS (s, MB): " + " ".join(f"{t:.0f}:{mb:.0f}" for t, mb in results["rss_series_mb"]))
    for name, value, target, ok in checks:
        print(f"  {name:<52} {value:>8.3f}  target {target:<7} {'PASS' if ok else 'FAIL'}")
    results["pass"] = {name: ok for name, _, _, ok in checks}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
