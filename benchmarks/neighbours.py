"""The k-NN graph of `imsim duplicates`, in memory: imsim's cell-at-a-time search against FAISS's per-query IVF search.

Synthetic 768-d unit rows (``tests.support.rows.clustered``: topics of ~50 rows, one row in five a near copy of
another) go through ``imsim.analysis.neighbours.build`` (k-means centres, each row's ``--probes`` nearest cells). Then:

- imsim: ``neighbours()`` over every row, timed (wall and CPU seconds of this process);
- FAISS: an ``IndexIVFFlat`` over the same centres, ``nprobe = --probes``, searched a query at a time (FAISS batches
  them, each query scans its own cells) for ``--faiss-queries`` rows, timed; its time for every row is that rate
  times N (**projected**, said so in the output);
- brute force for ``--sample`` rows: the share of each row's 17 exact nearest that each graph has (recall@17), and of
  the pairs at cosine ≥ 0.95 / 0.9 / 0.85 (what a duplicate threshold keeps).

No Milvus here: reading the rows out of a store is measured by ``benchmarks/scale.py duplicates``.

    python benchmarks/neighbours.py --rows 1000000
    python benchmarks/neighbours.py --rows 250000 --probes 8 16 24
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imsim.analysis import neighbours as nb  # noqa: E402
from tests.support.rows import clustered  # noqa: E402

K = 17  # each row itself and its 16 neighbours, as `imsim duplicates` asks


def recall(found: np.ndarray, truth: np.ndarray, truth_scores: np.ndarray) -> str:
    """recall@K and the recall of the exact pairs at or above a few thresholds."""
    parts = [f"recall@{K} {np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)]):.4f}"]
    for threshold in (0.95, 0.9, 0.85):
        want = hit = 0
        for got, line, scores in zip(found, truth, truth_scores, strict=True):
            pairs = set(line[scores >= threshold].tolist())
            want, hit = want + len(pairs), hit + len(pairs & set(got.tolist()))
        parts.append(f">= {threshold}: {hit / max(want, 1):.4f} of {want:,}")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, nargs="+", default=[nb.PROBES])
    parser.add_argument("--sample", type=int, default=2_000, help="rows compared with brute force")
    parser.add_argument("--faiss-queries", type=int, default=20_000, help="rows FAISS's per-query search is timed on")
    args = parser.parse_args()
    import faiss

    vectors = np.concatenate(list(clustered(args.rows, 768, seed=1)))
    sample = np.random.default_rng(0).choice(args.rows, min(args.sample, args.rows), replace=False)
    truth_scores, truth = faiss.knn(vectors[sample], vectors, K, faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    full = nb.build((vectors[i : i + 4_000] for i in range(0, args.rows, 4_000)), 768, args.rows, 0, max(args.probes))
    assert full.centres is not None
    print(
        f"{args.rows:,} rows x 768: {len(full.centres):,} cells trained and every row assigned its {max(args.probes)} "
        f"nearest in {time.perf_counter() - started:.1f} s; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads",
        flush=True,
    )
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(768), 768, len(full.centres), faiss.METRIC_INNER_PRODUCT)
    ivf.quantizer.add(full.centres)
    ivf.is_trained = True
    ivf.add(vectors)
    for probes in args.probes:
        found = nb.Collection(full.ids, full.paths, vectors, full.centres, np.ascontiguousarray(full.cells[:, :probes]))
        graph = np.empty((args.rows, K), np.int64)
        wall, cpu = time.perf_counter(), time.process_time()
        for rows, _, positions in nb.neighbours(found, K):
            graph[rows] = positions
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        measured = recall(graph[sample], truth, truth_scores)
        print(f"imsim, a cell at a time, {probes} probes: {wall:.1f} s, {cpu:.1f} CPU-s | {measured}", flush=True)
        ivf.nprobe = probes
        queries = min(args.faiss_queries, args.rows)
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, queries, 4_096):
            ivf.search(vectors[start : min(start + 4_096, queries)], K)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        _, theirs = ivf.search(vectors[sample], K)
        print(
            f"FAISS IndexIVFFlat, a query at a time, nprobe {probes}: {queries:,} rows in {wall:.1f} s, {cpu:.1f} CPU-s "
            f"-> {args.rows:,} rows {wall * args.rows / queries:.0f} s, {cpu * args.rows / queries:.0f} CPU-s (projected) | "
            f"{recall(theirs, truth, truth_scores)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
