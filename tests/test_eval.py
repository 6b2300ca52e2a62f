"""The evaluation harness: metrics against hand-computed values, the benchmark builder, and full runs with tiny models."""

from __future__ import annotations

import csv
import hashlib
import random

import numpy as np
import pytest
from PIL import Image

from imsim import calibration, fusion
from imsim.errors import ImsimError
from imsim.eval import edits, metrics, scoring
from imsim.eval.build import Benchmark, BenchmarkError, Groups, build_copydetect
from imsim.eval.runner import Evaluation
from imsim.eval.specs import parse_models

from .support.servers import SAMPLES
from .support.settings import make_settings

# --- metrics on fixed rankings ---------------------------------------------------------------------


def test_micro_ap_recall_at_precision_and_thresholds_by_hand():
    truth = {"q1": "r1", "q2": "r2", "q3": "r3"}  # q4 has no copy
    predictions = [
        ("q1", "r1", 0.9),
        ("q4", "r9", 0.8),
        ("q2", "r2", 0.7),
        ("q2", "r5", 0.6),
        ("q3", "r7", 0.5),
        ("q1", "r1", 0.4),
    ]  # the repeated pair counts once, at its best score
    curve = metrics.pr_curve(predictions, truth)
    # ranked: TP FP TP FP FP -> precision 1, 1/2, 2/3, 1/2, 2/5; recall 1/3, 1/3, 2/3, 2/3, 2/3
    np.testing.assert_allclose(curve.precision, [1, 0.5, 2 / 3, 0.5, 0.4])
    np.testing.assert_allclose(curve.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert metrics.micro_ap(curve) == pytest.approx(1 * 1 / 3 + 2 / 3 * 1 / 3)  # 0.5556
    assert curve.recall_at_precision(0.9) == pytest.approx(1 / 3)
    assert curve.recall_at_precision(0.6) == pytest.approx(2 / 3)
    assert curve.threshold_for_precision(0.9) == 0.9
    # P >= 0.5 is kept up to 0.6 (2 of 4) but recall 2/3 is first reached at 0.7 (2 of 3): the safest threshold
    assert curve.threshold_for_precision(0.5) == 0.7
    assert metrics.pr_curve([("q4", "r1", 0.9)], truth).threshold_for_precision(0.5) is None


# Hand-made cases with the values the ISC2021 definition gives (facebookresearch/isc2021, isc/metrics.py): predictions
# are ranked by score, equal scores false first; µAP = sum of precision x recall gained; the operating point at a
# precision is the highest recall reaching it, at its first (highest-scoring) prediction; R@k per ground-truth pair,
# rank = the query's predictions scoring at least as high as the true one, minus one.


def test_tied_scores_rank_false_first_so_order_and_a_constant_score_earn_nothing():
    truth = {"a": "R1"}
    forward = metrics.micro_ap(metrics.pr_curve([("a", "R1", 0.5), ("z", "R9", 0.5)], truth))
    backward = metrics.micro_ap(metrics.pr_curve([("z", "R9", 0.5), ("a", "R1", 0.5)], truth))
    assert forward == backward == pytest.approx(0.5)  # FP first: precision 1/2 when the TP arrives
    # a constant score for everything: 2 true among 6 -> the TPs come last: P = 1/5 and 2/6 where recall rises
    truth = {"q1": "r1", "q2": "r2"}
    flat = [("q1", "r1", 1.0), ("q1", "x", 1.0), ("q2", "r2", 1.0), ("q2", "y", 1.0), ("q3", "z", 1.0), ("q4", "w", 1.0)]
    assert metrics.micro_ap(metrics.pr_curve(flat, truth)) == pytest.approx(0.5 * (1 / 5) + 0.5 * (2 / 6))


def test_tied_scores_share_a_threshold():
    truth = {"a": "x", "b": "y"}
    curve = metrics.pr_curve([("a", "x", 0.8), ("b", "z", 0.8), ("b", "y", 0.5)], truth)
    # at 0.8: the FP first, then the TP: precision 0, then 1/2; at 0.5 2/3
    np.testing.assert_allclose(curve.precision, [0, 0.5, 2 / 3])
    assert curve.threshold_for_precision(0.9) is None and curve.threshold_for_precision(0.5) == 0.5
    assert curve.recall_at_precision(0.5) == 1.0


def test_no_match_queries_several_positives_and_repeated_pairs():
    truth: dict[str, str | set[str]] = {
        "q1": {"r1", "r2"},
        "q2": "r3",
    }  # q1 has two originals; q9 (no copy) only adds false positives
    predictions = [
        ("q1", "r1", 0.95),
        ("q9", "r1", 0.9),
        ("q1", "r2", 0.8),
        ("q1", "r2", 0.3),  # repeated: counted once at 0.8
        ("q2", "r4", 0.8),
        ("q2", "r3", 0.6),
    ]
    curve = metrics.pr_curve(predictions, truth)
    # 0.95 TP, 0.9 FP, 0.8 {FP (q2,r4) first, then TP (q1,r2)}, 0.6 TP; 3 positives
    np.testing.assert_allclose(curve.precision, [1, 1 / 2, 1 / 3, 2 / 4, 3 / 5])
    np.testing.assert_allclose(curve.recall, [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    assert metrics.micro_ap(curve) == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 4 + 1 / 3 * 3 / 5)
    assert curve.recall_at_precision(0.9) == pytest.approx(1 / 3) and curve.threshold_for_precision(0.9) == 0.95
    assert curve.recall_at_precision(0.6) == pytest.approx(1.0) and curve.threshold_for_precision(0.6) == 0.6
    assert curve.recall_at_precision(0.7) == pytest.approx(1 / 3)


def test_recall_at_k_counts_ties_pessimistically_per_ground_truth_pair():
    truth = {"q1": "r1", "q2": "r2", "q3": "r3"}
    rankings = {
        "q1": [("r1", 0.9), ("r4", 0.5)],  # rank 1
        "q2": [("r4", 0.7), ("r5", 0.6), ("r2", 0.5)],  # rank 3
        "q3": [("r9", 0.9)],  # never predicted
        "q4": [("r1", 0.9)],  # no copy: not counted
    }
    assert metrics.recall_at_k(rankings, truth, 1) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(rankings, truth, 3) == pytest.approx(2 / 3)
    # 20 byte-identical flags: the true one ties with the others -> rank 20, not 1, whatever order Milvus returned
    tied = {"q": [("r", 1.0)] + [(f"x{i}", 1.0) for i in range(19)]}
    assert metrics.recall_at_k(tied, {"q": "r"}, 1) == 0.0 and metrics.recall_at_k(tied, {"q": "r"}, 20) == 1.0
    # two originals for one query: two pairs, each ranked on its own
    assert metrics.recall_at_k({"q": [("a", 0.9), ("b", 0.8)]}, {"q": {"a", "b"}}, 1) == pytest.approx(0.5)


def test_group_metrics_by_hand_with_ties():
    assert metrics.average_precision([("a", 0.9), ("x", 0.8), ("b", 0.7), ("y", 0.6)], {"a", "b", "c"}) == pytest.approx(
        (1 + 2 / 3) / 3
    )
    # a tie between a relevant and an irrelevant item puts the irrelevant one first
    assert metrics.average_precision([("a", 0.5), ("x", 0.5)], {"a"}) == pytest.approx(1 / 2)
    groups = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "c1": "C"}
    group_rankings = {
        "a1": [("a1", 1.0), ("b1", 0.9), ("a2", 0.8), ("a3", 0.7)],
        "b1": [("b2", 0.9), ("a1", 0.8)],
        "c1": [("a1", 0.9)],
    }
    # a1: relevant {a2, a3} at ranks 2 and 3 (itself removed) -> (1/2 + 2/3)/2; b1: b2 at rank 1 -> 1; c1: no other member
    assert metrics.mean_average_precision(group_rankings, groups) == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)
    assert metrics.group_recall_at_k(group_rankings, groups, 1) == pytest.approx(1 / 2)
    assert metrics.group_recall_at_k(group_rankings, groups, 2) == pytest.approx(1.0)
    tied = {"b1": [("a1", 0.9), ("b2", 0.9)]}
    assert metrics.group_recall_at_k(tied, groups, 1) == 0.0


def test_model_specs():
    specs = parse_models("clip, dinov2@dinov2_pooling=cls+gem;dinov2_revision=main, gem=dinov2@dinov2_pooling=cls+gem")
    assert [(s.label, s.name, s.overrides) for s in specs] == [
        ("clip", "clip", {}),
        (
            "dinov2@dinov2_pooling=cls+gem;dinov2_revision=main",
            "dinov2",
            {"dinov2_pooling": "cls+gem", "dinov2_revision": "main"},
        ),
        ("gem", "dinov2", {"dinov2_pooling": "cls+gem"}),
    ]
    with pytest.raises(ImsimError, match="not SETTING=VALUE"):
        parse_models("dinov2@nonsense=1")


# --- edits and the benchmark builder ------------------------------------------------------------------


@pytest.mark.parametrize("prefer_augly", [True, False])
def test_every_edit_runs_and_is_reproducible(prefer_augly):
    photo = Image.open(SAMPLES / "photos" / "chelsea.jpg").convert("RGB")
    table = edits.edits(prefer_augly)
    assert set(table) == {
        "crop",
        "resize",
        "rotate",
        "flip",
        "jitter",
        "grayscale",
        "blur",
        "jpeg",
        "pad",
        "text",
        "emoji",
        "screenshot",
    }
    assert (table["emoji"] is edits.emoji_augly) == prefer_augly  # AugLy is installed with the test extras
    for name, edit in table.items():
        a, description = edit(photo, random.Random(5))
        b, _ = edit(photo, random.Random(5))
        assert a.mode == "RGB" and description and np.array_equal(np.asarray(a), np.asarray(b)), name
        assert not np.array_equal(np.asarray(a.resize(photo.size)), np.asarray(photo)), f"{name} changed nothing"


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_build_copydetect_splits_and_reproduces(tmp_path):
    manifest = build_copydetect(SAMPLES, tmp_path / "b1", queries=12, negatives=6, background=3, seed=3)
    assert (manifest["references"], manifest["queries_with_copy"], manifest["queries_without_copy"], manifest["background"]) == (
        38 - 6 - 3,
        12,
        6,
        3,
    )
    bench = Benchmark.load(tmp_path / "b1")
    assert len(bench.queries) == 18 and len(bench.truth) == 12 and len(bench.references) == 29 and len(bench.background) == 3
    rows = list(csv.DictReader(open(tmp_path / "b1" / "queries.csv")))
    source_of = {p.name: sha(p) for p in SAMPLES.rglob("*") if p.suffix in (".jpg", ".png")}
    reference_hashes = {sha(p) for p in bench.references.values()}
    for row in rows:
        if row["reference_id"]:  # the reference file is a byte copy of the query's source image
            assert sha(bench.references[row["reference_id"]]) == source_of[row["source"]]
        else:  # no copy: the source was held out of the references
            assert source_of[row["source"]] not in reference_hashes
        assert row["edits"]
    assert len({r["reference_id"] for r in rows if r["reference_id"]}) == 12  # distinct references
    gt = list(csv.reader(open(tmp_path / "b1" / "ground_truth.csv")))
    assert gt[0] == ["query_id", "reference_id"] and len(gt) == 13
    build_copydetect(SAMPLES, tmp_path / "b2", queries=12, negatives=6, background=3, seed=3)
    for sub in ("queries", "references", "background"):
        assert {p.name: sha(p) for p in (tmp_path / "b1" / sub).iterdir()} == {
            p.name: sha(p) for p in (tmp_path / "b2" / sub).iterdir()
        }
    with pytest.raises(ImsimError, match="not empty"):
        build_copydetect(SAMPLES, tmp_path / "b1", queries=2, negatives=1)
    with pytest.raises(ImsimError, match="too few"):
        build_copydetect(SAMPLES, tmp_path / "b3", queries=40, negatives=1)


def _bench_folder(root, rows, refs=("R1", "R2"), queries=("Q1", "Q2")):
    """A hand-made benchmark folder: the real sample photos as references and queries, queries.csv from rows."""
    photos = sorted((SAMPLES / "photos").glob("*.jpg"))
    for folder, ids, offset in (("references", refs, 0), ("queries", queries, 5)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(ids):
            (root / folder / f"{name}.jpg").write_bytes(photos[offset + i].read_bytes())
    (root / "queries.csv").write_text(rows)
    return root


def test_a_benchmark_folder_that_breaks_the_format_is_an_error_naming_the_file_line_or_id(tmp_path):
    good = _bench_folder(tmp_path / "good", "query_id,reference_id\nQ1,R1\nQ2,\n")
    bench = Benchmark.load(good)
    assert bench.truth == {"Q1": "R1"} and set(bench.queries) == {"Q1", "Q2"} and set(bench.references) == {"R1", "R2"}
    # the user's layout from the issue: refs/ beside queries.csv used to run with 0 references and print zeros
    wrong = _bench_folder(tmp_path / "refs-folder", "query_id,reference_id\nQ1,R1\nQ2,\n")
    (wrong / "references").rename(wrong / "refs")
    head = "query_id,reference_id\n"
    cases = {
        "refs-folder": (wrong, r"no references/ folder \(it has queries/, refs/\)"),
        "unknown-ref": (_bench_folder(tmp_path / "u", head + "Q1,R9\nQ2,\n"), r"csv:2: reference 'R9' of query 'Q1' has no"),
        "stray-query": (_bench_folder(tmp_path / "s", head + "Q1,R1\n"), r"Q2.jpg: not listed in .*queries.csv"),
        "missing-query": (_bench_folder(tmp_path / "m", head + "Q1,R1\nQ2,\nQ3,R2\n"), r"queries.csv:4: query 'Q3' has no file"),
        "twice": (_bench_folder(tmp_path / "t", head + "Q1,R1\nQ2,\nQ1,R2\n"), r"queries.csv:4: query 'Q1' is listed twice"),
        "header": (_bench_folder(tmp_path / "h", "query,reference\nQ1,R1\n"), r"needs the columns query_id,reference_id"),
        "no-rows": (_bench_folder(tmp_path / "n", head), r"queries.csv: no queries"),
    }
    dup = _bench_folder(tmp_path / "d", "query_id,reference_id\nQ1,R1\nQ2,\n")
    (dup / "references" / "R1.png").write_bytes((SAMPLES / "flags" / "ar.png").read_bytes())
    cases["duplicate-id"] = (dup, r"id 'R1' is also")
    gt = _bench_folder(tmp_path / "g", "query_id,reference_id\nQ1,R1\nQ2,\n")
    (gt / "ground_truth.csv").write_text("query_id,reference_id\nQ1,R2\n")
    cases["ground-truth"] = (gt, r"ground_truth.csv disagrees with .*queries.csv on query 'Q1'")
    empty = _bench_folder(tmp_path / "e", "query_id,reference_id\nQ1,\n", refs=(), queries=("Q1",))
    cases["no-references"] = (empty, r"references: no images")
    cases["no-folder"] = (tmp_path / "nothing", r"no such benchmark folder")
    for folder, message in cases.values():
        with pytest.raises(BenchmarkError, match=message):
            Benchmark.load(folder)


# --- full runs ----------------------------------------------------------------------------------------


def exact_recall_at_1(settings, bench: Benchmark, name: str) -> float:
    """Independent of the runner: embed with the Client (PIL path) and search by numpy."""
    from imsim.client.local import Client

    client = Client(settings.replace(models=name))
    refs = sorted(bench.references)
    ref_vecs = client.models.embed_many([bench.references[r] for r in refs], name)[name]
    queries = sorted(bench.truth)
    q_vecs = client.models.embed_many([bench.queries[q] for q in queries], name)[name]
    best = np.argmax(q_vecs @ ref_vecs.T, axis=1)
    return float(np.mean([refs[j] == bench.truth[q] for q, j in zip(queries, best, strict=False)]))


def exact_whitened(settings, evaluation, bench, name, folds=False):
    """``name+pcaw`` computed by hand: a whitening learned on the reference vectors, every query ranked exactly (with
    ``folds``: ``+pcaw(collection)``, each fold of queries with a whitening of the references and the other folds)."""
    from imsim.client.local import Client
    from imsim.eval.scoring import exact_rankings, fold_of, score_method
    from imsim.whitening import learn

    model = evaluation.models[name]
    refs = sorted(bench.references)
    queries = sorted(bench.queries)
    with Client(settings.replace(models=name), embedders={name: model}) as client:
        ref_vecs = client.models.embed_many([bench.references[r] for r in refs], name)[name]
        q_vecs = client.models.embed_many([bench.queries[q] for q in queries], name)[name]
    if not folds:
        w = learn(ref_vecs)
        ranked = exact_rankings(w.apply(q_vecs), w.apply(ref_vecs), refs, queries, 50)
        return score_method(f"{name}+pcaw", "variant", ranked, dict(bench.truth))
    ranked = {}
    for fold in range(5):
        held = [i for i, q in enumerate(queries) if fold_of(q) == fold]
        others = [i for i, q in enumerate(queries) if fold_of(q) != fold]
        if held:
            w = learn(np.concatenate([ref_vecs, q_vecs[others]]))
            ranked.update(exact_rankings(w.apply(q_vecs[held]), w.apply(ref_vecs), refs, [queries[i] for i in held], 50))
    return score_method(f"{name}+pcaw(collection)", "variant", ranked, dict(bench.truth))


def test_copydetect_run_scores_models_fusions_and_variants(tiny_model_dirs, tmp_path, small_bench):
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    evaluation = Evaluation(parse_models("clip,dinov2"), settings, tmp_path / "out")
    results = {
        r.label: r for r in evaluation.copydetect(Benchmark.load(small_bench), ["rrf", "weighted"], whiten=True, score_norm=True)
    }
    assert set(results) == {
        "clip",
        "dinov2",
        "fused:rrf",
        "fused:weighted",
        "clip+pcaw",
        "clip+pcaw(collection)",
        "clip+norm",
        "dinov2+pcaw",
        "dinov2+pcaw(collection)",
        "dinov2+norm",
    }
    bench = Benchmark.load(small_bench)
    for name in ("clip", "dinov2"):
        assert results[name].recall[1] == pytest.approx(exact_recall_at_1(settings, bench, name))
        assert results[name].calibration_key == calibration.version_key(name, evaluation.models[name].info.version_tag)
    for r in results.values():
        assert 0 <= r.recall[1] <= r.recall[3] <= r.recall[10] <= 1 and 0 <= r.micro_ap <= 1
    assert evaluation.report.throughput["clip"] > 0 and evaluation.report.throughput["ingest"] > 0
    assert evaluation.save_calibration() == calibration.path(tmp_path / "out")  # kept with the report until applied
    assert not calibration.path(settings.data_dir).exists()
    stored = calibration.load(tmp_path / "out")
    # the duplicate thresholds are calibrated on the pairs `imsim duplicates` links, not on query->reference rankings
    duplicates = {d.label: d for d in evaluation.report.duplicates}
    whitened = {f"{m}+pcaw{w}" for m in ("clip", "dinov2") for w in ("", "(collection)")}
    assert set(duplicates) == {"clip", "dinov2", "fused:weighted", *whitened}  # whitened versions too
    assert set(stored) == {d.calibration_key for d in duplicates.values()}  # unreached ones too, with null thresholds
    for d in duplicates.values():
        assert d.images == len(bench.references) + len(bench.queries) and d.positives == len(bench.truth)
        assert stored[d.calibration_key]["threshold_p95"] == d.thresholds["p95"]
        assert stored[d.calibration_key]["threshold_p90"] == d.thresholds["p90"]
    assert not any(r.calibration_key for r in results.values() if r.label.endswith("+norm") or r.label == "fused:rrf")
    for name in ("clip", "dinov2"):
        version = evaluation.whitened[f"{name}+pcaw"][2]
        assert results[f"{name}+pcaw"].calibration_key == calibration.version_key(name, version.info.version_tag)
        assert duplicates[f"{name}+pcaw"].calibration_key == results[f"{name}+pcaw"].calibration_key
        # the production path (a derived version searched by the client) scores as an exact whitened ranking does
        exact = exact_whitened(settings, evaluation, bench, name)
        assert results[f"{name}+pcaw"].micro_ap == pytest.approx(exact.micro_ap, abs=0.005)
        assert results[f"{name}+pcaw"].recall == pytest.approx(exact.recall, abs=0.005)
        # learned on the collection, a fold of queries at a time: never on the queries being ranked
        folds = exact_whitened(settings, evaluation, bench, name, folds=True)
        assert results[f"{name}+pcaw(collection)"].micro_ap == pytest.approx(folds.micro_ap, abs=0.005)
        assert results[f"{name}+pcaw(collection)"].recall == pytest.approx(folds.recall, abs=0.005)
    assert duplicates["fused:weighted"].calibration_key == results["fused:weighted"].calibration_key
    report = evaluation.report.as_dict()
    rrf = next(r for r in report["copydetect"] if r["label"] == "fused:rrf")
    assert rrf["score_kind"].startswith("rank-fusion") and report["copydetect"][0]["score_kind"] == "similarity"
    per_query = report["copydetect"][0]["per_query"]  # every query's ranking with its scores, for machines
    assert set(per_query) == set(bench.queries) and all(len(q["ranking"]) == 10 for q in per_query.values())
    assert all(per_query[q]["reference"] == r for q, r in bench.truth.items())
    assert per_query[sorted(bench.truth)[0]]["ranking"][0][1] >= per_query[sorted(bench.truth)[0]]["ranking"][1][1]

    # what the report says `imsim duplicates` returns is what `imsim duplicates` returns, on the same stored images
    from imsim.client.local import Client
    from imsim.duplicates import find_groups
    from imsim.sources.names import path_id

    positives = {tuple(sorted((path_id(bench.queries[q]), path_id(bench.references[r])))) for q, r in bench.truth.items()}
    eval_store = settings.replace(milvus_uri=str(tmp_path / "out" / "eval.db"), collection_prefix="imsimeval")
    checked = 0
    with Client(eval_store, embedders=evaluation.models) as client:
        for label in ("clip", "dinov2"):
            d = duplicates[label]
            # a threshold the random tiny models reach, when they reach neither 90 % nor 95 % precision
            points = {name: value for name, value in d.thresholds.items() if value is not None}
            for name, value in points.items():
                groups, used, _ = find_groups(client, model=label, threshold=value)
                pairs = {
                    tuple(sorted((a, b))) for g in groups for i, (a, _) in enumerate(g.members) for b, _ in g.members[i + 1 :]
                }
                right = len(pairs & positives)
                assert used.value == value and len(groups) == d.at[name]["groups"]
                assert d.at[name]["group_precision"] == pytest.approx(right / len(pairs))
                assert d.at[name]["group_recall"] == pytest.approx(right / len(positives))
                checked += 1
    assert checked  # at least one model reached a calibrated threshold on this benchmark


def test_group_run_matches_an_independent_map(tiny_model_dirs, tmp_path):
    """Groups: each photo with two edited copies of itself."""
    rows, folder = [], tmp_path / "groups"
    folder.mkdir()
    for i, photo in enumerate(sorted((SAMPLES / "photos").glob("*.jpg"))[:6]):
        image = Image.open(photo).convert("RGB")
        for j in range(3):
            out = folder / f"{photo.stem}-{j}.jpg"
            (edits.random_edit(image, random.Random(f"{i}{j}"), max_edits=1)[0] if j else image).save(out)
            rows.append({"path": out.name, "group": photo.stem})
    with open(folder / "groups.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "group"])
        writer.writeheader()
        writer.writerows(rows)
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    groups = Groups.load(folder / "groups.csv")
    evaluation = Evaluation(parse_models("clip,dinov2"), settings, tmp_path / "out")
    results = {r.label: r for r in evaluation.groups(groups, ["rrf"])}
    assert set(results) == {"clip", "dinov2", "fused:rrf"}
    from imsim.client.local import Client

    paths = sorted(groups.members)
    vecs = Client(settings.replace(models="dinov2")).models.embed_many(paths, "dinov2")["dinov2"]
    scores = vecs @ vecs.T
    rankings = {p: [(paths[j], float(scores[i, j])) for j in range(len(paths))] for i, p in enumerate(paths)}
    assert results["dinov2"].map == pytest.approx(metrics.mean_average_precision(rankings, groups.members), abs=1e-6)


# --- positives by source, the calibrated fusion ------------------------------------------------------


def _bench_with_repeated_sources(root, photos):
    """5 references; q0, q1 two copies of r0's original; q2, q3 two copies of one original that is no reference."""
    import csv as csv_module

    from PIL import Image

    (root / "references").mkdir(parents=True)
    (root / "queries").mkdir()
    for i, photo in enumerate(photos[:5]):
        Image.open(photo).convert("RGB").save(root / "references" / f"r{i}.jpg", quality=95)
    Image.open(photos[0]).convert("RGB").save(root / "queries" / "q0.jpg", quality=70)
    Image.open(photos[0]).convert("RGB").rotate(3).save(root / "queries" / "q1.jpg", quality=90)
    Image.open(photos[6]).convert("RGB").save(root / "queries" / "q2.jpg", quality=70)
    Image.open(photos[6]).convert("RGB").rotate(3).save(root / "queries" / "q3.jpg", quality=90)
    rows = [("q0", "r0", photos[0].name), ("q1", "r0", photos[0].name), ("q2", "", photos[6].name), ("q3", "", photos[6].name)]
    with open(root / "queries.csv", "w", newline="") as fh:
        writer = csv_module.writer(fh)
        writer.writerow(["query_id", "reference_id", "edits", "source"])
        writer.writerows((q, r, "", s) for q, r, s in rows)
    return root


def test_two_images_of_one_original_are_a_true_pair_transitively(tmp_path):
    photos = sorted((SAMPLES / "photos").glob("*.jpg"))
    bench = Benchmark.load(_bench_with_repeated_sources(tmp_path / "b", photos))
    assert sorted(sorted(c) for c in bench.copy_classes()) == [["q0", "q1", "r0"], ["q2", "q3"]]
    assert bench.sources == {"q0": photos[0].name, "q1": photos[0].name, "q2": photos[6].name, "q3": photos[6].name}


def test_duplicates_calibration_counts_copies_of_one_original_as_true_pairs(tiny_model_dirs, tmp_path):
    """Two queries of one reference (and two copies of one no-match original) used to be negatives: every "false" pair
    at the calibrated threshold was such a pair, which pushed the threshold up and recall down 3-5x."""
    from imsim.sources.names import path_id

    photos = sorted((SAMPLES / "photos").glob("*.jpg"))
    bench = Benchmark.load(_bench_with_repeated_sources(tmp_path / "b", photos))
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    evaluation = Evaluation(parse_models("dinov2"), settings, tmp_path / "out")
    evaluation.copydetect(bench, [])
    (result,) = evaluation.report.duplicates
    files = {**bench.references, **bench.queries}
    want = {("q0", "r0"), ("q1", "r0"), ("q0", "q1"), ("q2", "q3")}
    assert result.positives == len(want) == 4  # the ground truth alone has 2
    quality = scoring.duplicate_quality(
        [(min(path_id(files[a]), path_id(files[b])), max(path_id(files[a]), path_id(files[b])), 0.99) for a, b in want],
        0.5,
        {(min(path_id(files[a]), path_id(files[b])), max(path_id(files[a]), path_id(files[b]))) for a, b in want},
        [path_id(f) for f in files.values()],
    )
    assert quality["edge_precision"] == quality["edge_recall"] == 1.0


def test_logistic_fit_recovers_the_weights_it_was_drawn_from():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(20_000, 2))
    p = 1 / (1 + np.exp(-(3.0 * x[:, 0] - 2.0 * x[:, 1] + 0.5)))
    weights, bias = fusion.fit_logistic(x, (rng.uniform(size=len(p)) < p).astype(float), l2=0.0)
    np.testing.assert_allclose(weights, [3.0, -2.0], atol=0.15)
    assert bias == pytest.approx(0.5, abs=0.1)
    fused = fusion.calibrated({"a": {"x": 0.9, "y": 0.1}, "b": {"x": 0.2}}, {"a": 3.0, "b": -2.0}, 0.5)
    assert fused["x"] == pytest.approx(1 / (1 + np.exp(-(0.5 + 2.7 - 0.4))))
    assert fused["y"] == pytest.approx(1 / (1 + np.exp(-(0.5 + 0.3))))  # no score from b: counted as 0


def test_cross_fitting_never_scores_a_query_with_weights_that_saw_it():
    candidates = {f"q{i}": [(f"r{i}", [0.9, 0.1]), (f"r{i + 1}", [0.2, 0.3])] for i in range(40)}
    truth = {f"q{i}": f"r{i}" for i in range(40)}
    seen_by: dict[str, set[str]] = {}

    def spy(cands, labels, queries):
        fitted = set(queries)
        for q in cands:
            if q not in fitted:
                seen_by.setdefault(q, set()).update(fitted)
        return scoring.fit_fusion(cands, labels, queries)

    rankings = scoring.cross_fitted(candidates, truth, depth=10, fit=spy)
    assert set(rankings) == set(candidates)
    assert all(q not in fitted for q, fitted in seen_by.items())
    assert len({scoring.fold_of(q) for q in candidates}) == scoring.CV_FOLDS
    assert all(r[0][0] == truth[q] for q, r in rankings.items())  # the pattern generalises across folds


def test_pairs_marked_not_a_duplicate_in_the_store_are_calibrated_as_negatives(tiny_model_dirs, tmp_path):
    """The duplicates page's "not a duplicate" marks live in the user's store; the next calibration scores them with
    the store's vectors of the same model versions and counts them as negatives, so no threshold it measures admits
    them at its precision. Without marks (or with a store lacking these versions) nothing changes."""
    import shutil

    from imsim.ingest import ingest_local
    from imsim.sources.names import path_id
    from imsim.store import VectorStore
    from imsim.store.marks import Mark, Marks

    photos = sorted((SAMPLES / "photos").glob("*.jpg"))
    bench = Benchmark.load(_bench_with_repeated_sources(tmp_path / "b", photos))
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    plain = Evaluation(parse_models("dinov2"), settings, tmp_path / "plain")
    plain.copydetect(bench, [])
    (before,) = plain.report.duplicates
    assert before.marked_negatives == 0 and before.thresholds["p90"] is not None

    # the user's library: each photo and a byte-identical copy (cosine 1.0), every such pair marked "not a duplicate"
    library = tmp_path / "library"
    library.mkdir()
    pairs = []
    for photo in photos[:8]:
        shutil.copy(photo, library / photo.name)
        shutil.copy(photo, library / f"copy-{photo.name}")
        pairs.append((str(library / photo.name), str(library / f"copy-{photo.name}")))
    ingest_local([str(p) for p in sorted(library.iterdir())], settings.replace(models="dinov2"))
    with VectorStore(settings) as store:
        for a, b in pairs:
            Marks(store).add(Mark(path_id(a), path_id(b), path_a=a, path_b=b))
    marked = Evaluation(parse_models("dinov2"), settings, tmp_path / "marked")
    marked.copydetect(bench, [])
    (after,) = marked.report.duplicates
    assert after.marked_negatives == len(pairs) == 8
    for name in ("p90", "p95"):  # eight negatives at 1.0: no threshold reaches 90 % precision any more
        assert after.thresholds[name] is None, (name, before.thresholds, after.thresholds)
    from imsim.eval.report import markdown

    assert "calibrated as negatives: dinov2 8." in markdown(marked.report)
    # a store with no vectors of the run's model version: its marks cannot be scored, and are not used
    other = Evaluation(parse_models("clip"), settings.replace(models="clip"), tmp_path / "other")
    other.copydetect(bench, [])
    assert all(d.marked_negatives == 0 for d in other.report.duplicates)
