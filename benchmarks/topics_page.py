"""The topics page from a warm `imsim serve`: how long 50 topics with their thumbnails take to draw (issue 38).

A library of ``--files`` distinct images (random crops of the bundled samples, 320 px wide),
ingested with the tiny test models into Milvus Lite behind `imsim store serve`; `imsim clusters -k 50` keeps a
clustering; `imsim serve` starts and answers ``GET /v1/clusters/latest`` once (warm). Then headless Chromium opens
``/topics`` ``--loads`` times (``tests/support/topics.js``, the page test's own script) and the page reports the
milliseconds from its script's start to every topic drawn (``data-rendered``), and the milliseconds from navigation
until every thumbnail has decoded (``performance.now()`` then). Printed: the clustering's time, the API call's
p50, and the page's times per load (target: 2 s).

    python benchmarks/topics_page.py                  # 500 images, 50 topics, 5 loads
    python benchmarks/topics_page.py --files 2000 --loads 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.servers import MilvusLiteServer, RedisServer, free_port, settings_env, stop  # noqa: E402

NODE_MODULES = ROOT / ".cache" / "node" / "node_modules"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--topics", type=int, default=50)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()

    from imsim.ingest import ingest_local
    from imsim.models.testing import build_tiny_models
    from imsim.settings import load
    from imsim.sources.paths import discover

    tmp = Path(tempfile.mkdtemp(prefix="imsim-topics-bench-"))
    models = build_tiny_models(tmp / "models")
    samples = discover([ROOT / "samples"]).files
    library = tmp / "library"
    library.mkdir()
    files = []
    rng = random.Random(0)
    originals = [Image.open(path).convert("RGB") for path in samples]
    for i in range(args.files):  # each a different crop of a sample: as many distinct images as files
        image = originals[i % len(originals)]
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.5, 0.9)), int(h * rng.uniform(0.5, 0.9))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        target = library / f"{i:06d}.jpg"
        image.crop((x, y, x + cw, y + ch)).resize((320, max(1, 320 * ch // cw))).save(target, quality=85)
        files.append(str(target))
    (tmp / "store").mkdir()
    (tmp / "redis").mkdir()
    store = MilvusLiteServer(tmp / "store")
    redis = RedisServer(tmp / "redis")
    serve = None
    try:
        settings = load(
            {f"{name}_model": str(path) for name, path in models.items()}
            | {
                "data_dir": tmp / "data",
                "milvus_uri": store.uri,
                "redis_url": redis.url,
                "env_file": tmp / "none.env",
                "allowed_roots": str(library),
            }
        )
        env = settings_env(settings) | {"IMSIM_API_URL": "off"}
        ingest_local(files, settings)
        say(f"{len(files):,} images stored; clustering into {args.topics} topics")
        started = time.perf_counter()
        made = subprocess.run(
            [sys.executable, "-m", "imsim.cli", "clusters", "--model", "dinov2", "-k", str(args.topics), "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        cluster_s = time.perf_counter() - started
        assert json.loads(made.stdout)["k"] == args.topics
        port = free_port()
        serve = subprocess.Popen(
            [sys.executable, "-m", "imsim.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                if requests.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or serve.poll() is not None:
                raise SystemExit("imsim serve did not become ready")
            time.sleep(0.5)
        calls = []
        for _ in range(11):  # the first warms it
            started = time.perf_counter()
            answer = requests.get(url + "/v1/clusters/latest", timeout=60)
            answer.raise_for_status()
            calls.append(time.perf_counter() - started)
        thumbs_of = [img["id"] for t in answer.json()["topics"] for img in t["nearest"] + t["outliers"][:4]]
        session = requests.Session()
        for image_id in thumbs_of:  # made once (the first page load would make them): a warm service's cache
            session.get(f"{url}/v1/images/{image_id}/thumbnail", params={"size": 160}, timeout=60).raise_for_status()
        started = time.perf_counter()
        for image_id in thumbs_of:
            session.get(f"{url}/v1/images/{image_id}/thumbnail", params={"size": 160}, timeout=60).raise_for_status()
        cached_ms = (time.perf_counter() - started) * 1000 / max(1, len(thumbs_of))
        config = {"url": url + "/", "shots": str(tmp), "chromium": "/usr/bin/chromium", "image": files[0]}
        (tmp / "config.json").write_text(json.dumps(config))
        rendered: list[int] = []
        loaded: list[int] = []
        for _ in range(args.loads):
            seen = subprocess.run(
                ["node", str(ROOT / "tests" / "support" / "topics.js"), str(tmp / "config.json")],
                capture_output=True,
                text=True,
                timeout=300,
                env=os.environ | {"NODE_PATH": str(NODE_MODULES)},
                check=True,
            )
            shown = json.loads(seen.stdout)
            assert len(shown["topics"]) == args.topics, shown["status"]
            assert all(t["drawn"] == t["thumbs"] > 0 for t in shown["topics"]), shown["topics"]
            rendered.append(shown["renderedMs"])
            loaded.append(shown["thumbsMs"])
        thumbs = sum(t["thumbs"] for t in shown["topics"])
        print(
            f"topics page | {args.files:,} images, {args.topics} topics, {thumbs} thumbnails | clustering (CLI, cold) "
            f"{cluster_s:.1f} s | GET /v1/clusters/latest p50 {statistics.median(calls[1:]) * 1000:.0f} ms | a cached "
            f"thumbnail {cached_ms:.1f} ms (one client, in sequence) | topics "
            f"drawn {statistics.median(rendered):,.0f} ms p50 after the page's script starts | every thumbnail decoded "
            f"{statistics.median(loaded):,.0f} ms p50 from navigation ({min(loaded):,}-{max(loaded):,} ms over "
            f"{args.loads} loads; target <= 2,000 ms)"
        )
    finally:
        if serve is not None:
            stop(serve)
        store.kill()
        redis.kill()


if __name__ == "__main__":
    main()
