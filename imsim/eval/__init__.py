"""Evaluation: which model for which job, measured reproducibly on your own images.

:mod:`~imsim.eval.edits` (edited copies), :mod:`~imsim.eval.build` (a DISC21-style benchmark from a
folder), :mod:`~imsim.eval.metrics` (recall@k, µAP, precision-recall, mAP), :mod:`~imsim.eval.runner`
(ingest through the normal pipeline into a namespace of its own, query, score), :mod:`~imsim.eval.report`
(Markdown, JSON and plots) and :mod:`~imsim.eval.calibration` (thresholds for ``imsim duplicates``).
"""
