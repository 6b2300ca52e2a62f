"""Does ingest time grow linearly with the corpus? Ingest 1k, then up to 10k, then up to 100k images into
one store and print images/s for each step (constant images/s = linear growth).

Uses the tiny random-weight models (the model cost is not what this measures: the store growing is)
and small JPEGs derived from the bundled real photos. Run:

    python benchmarks/ingest_scaling.py --steps 1000,10000,100000 [--milvus-uri http://127.0.0.1:19530]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from imsim.ingest import Ingestor, ingest_local
from imsim.models.testing import build_tiny_models
from imsim.settings import load
from imsim.store import VectorStore
from imsim.synth import write_variants

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="1000,10000,100000", help="cumulative corpus sizes")
    parser.add_argument("--milvus-uri", default="", help="default: a Milvus Lite file in a temp dir")
    parser.add_argument("--size", type=int, default=64, help="side of the generated JPEGs")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    work = Path(tempfile.mkdtemp(prefix="imsim-scaling-"))
    models = build_tiny_models(work / "models")
    settings = load(
        dict(
            data_dir=work,
            milvus_uri=args.milvus_uri,
            clip_model=str(models["clip"]),
            dinov2_model=str(models["dinov2"]),
            device="cpu",
            collection_prefix="scaling",
            chunk_size=1000,
        )
    )
    t0 = time.perf_counter()
    files = write_variants(
        [ROOT / "samples" / "photos"], work / "images", steps[-1], size=(args.size, args.size), seed=0, per_folder=1000
    )
    print(
        f"generated {len(files)} JPEGs of {args.size}x{args.size} in {time.perf_counter() - t0:.0f}s; store: "
        f"{settings.resolved_milvus_uri}",
        flush=True,
    )
    ingestor = Ingestor(settings)
    done = 0
    print("| corpus after step | images in step | seconds | images/s |")
    print("| ---: | ---: | ---: | ---: |")
    for total in steps:
        part = files[done:total]
        t0 = time.perf_counter()
        result = ingest_local(part, settings, ingestor=ingestor)
        seconds = time.perf_counter() - t0
        assert result.done == len(part), result.failures
        print(f"| {total:,} | {len(part):,} | {seconds:.1f} | {len(part) / seconds:.0f} |", flush=True)
        done = total
    store = ingestor.store
    assert isinstance(store, VectorStore)
    counts = {name: store.rows.count(name) for name in ingestor.collections.values()}
    print(f"rows per collection: {counts}")
    ingestor.close()


if __name__ == "__main__":
    main()
