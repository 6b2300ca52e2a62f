"""Fusion maths on hand-made rankings."""

import pytest

from imsim.fusion import order, rrf, weighted


def test_rrf_hand_computed():
    fused = rrf({"clip": ["a", "b", "c"], "dinov2": ["b", "c", "d"]}, k=60)
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 62)
    assert fused["d"] == pytest.approx(1 / 63)
    assert [i for i, _ in order(fused)] == ["b", "c", "a", "d"]


def test_rrf_k_changes_weight_of_top_ranks():
    rankings = {"m1": ["x", "y"], "m2": ["y", "z"]}
    assert order(rrf(rankings, k=1))[0][0] == "y"
    assert rrf(rankings, k=1)["x"] == pytest.approx(0.5)


def test_weighted_equal_and_custom():
    scores = {"clip": {"a": 0.9, "b": 0.5}, "dinov2": {"a": 0.1, "b": 0.7}}
    eq = weighted(scores)
    assert eq["a"] == pytest.approx(0.5) and eq["b"] == pytest.approx(0.6)
    custom = weighted(scores, {"clip": 3, "dinov2": 1})
    assert custom["a"] == pytest.approx(0.75 * 0.9 + 0.25 * 0.1)
    assert order(custom)[0][0] == "a"


def test_weighted_missing_score_counts_zero_and_bad_weights():
    fused = weighted({"m1": {"a": 1.0}, "m2": {"b": 1.0}})
    assert fused == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}
    with pytest.raises(ValueError):
        weighted({"m1": {"a": 1.0}}, {"m1": -1})
    with pytest.raises(ValueError):
        weighted({"m1": {"a": 1.0}}, {"other": 1})


def test_order_ties_are_deterministic_and_limited():
    assert order({"b": 1.0, "a": 1.0, "c": 0.5}, limit=2) == [("a", 1.0), ("b", 1.0)]


def test_settings_refuse_fusion_weights_that_cannot_fuse_and_a_model_named_twice():
    from imsim.errors import ConfigError
    from imsim.settings import load

    for weights, why in (
        ("clip=0,dinov2=0", "no positive weight"),
        ("clip=-1,dinov2=2", "a weight must be a number >= 0"),
        ("clip=1,dinov3=1", "names 'dinov3', which is no model"),
        ("clip=nan", "a weight must be a number >= 0"),
        ("clip", "is not name=weight"),
    ):
        with pytest.raises(ConfigError, match=why):
            load({"fusion_weights": weights, "env_file": "/dev/null"})
    with pytest.raises(ConfigError, match="'onnx' is named twice"):
        load({"models": "onnx,onnx", "env_file": "/dev/null"})
    assert load({"fusion_weights": "clip=0,dinov2=1", "env_file": "/dev/null"}).weights == {"clip": 0.0, "dinov2": 1.0}


def test_cosines_are_reported_within_minus_one_and_one():
    from imsim.store import cosine

    assert cosine(1.0000001) == 1.0 and cosine(-1.0000002) == -1.0 and cosine(0.25) == 0.25


def test_the_final_rate_is_the_runs_average_not_its_last_window():
    from rich.progress import Progress

    from imsim.cli._common import RateColumn

    clock = [0.0]
    progress = Progress(RateColumn(), get_time=lambda: clock[0])
    task = progress.add_task("x", total=194)
    for second in range(120):  # slow for two minutes, then a burst at the end
        clock[0] = float(second)
        progress.advance(task, 1)
    for _ in range(74):
        clock[0] += 0.01
        progress.advance(task, 1)
    progress.stop_task(task)
    done = progress.tasks[0]
    assert done.finished
    rate = float(str(RateColumn().render(done)).split()[0])
    assert (
        done.elapsed and rate < 2.0 and rate == pytest.approx(194 / done.elapsed, abs=0.05)
    )  # "194/194 5.1 img/s" showed 3x the truth


def test_assemble_gives_every_hit_every_models_score_and_rank_and_fuses_them():
    """One query, two models: `b` was returned by both, `a` only by clip and `d` only by dinov2; the stored vectors of
    the ids a model missed (what `missing` asks for) complete every hit's scores; ranks stay each model's own."""
    import numpy as np

    from imsim.fusion import Method, assemble, missing
    from imsim.store import StoredHit

    def hit(i: str, score: float) -> StoredHit:
        return StoredHit(i, score, {"path": f"/p/{i}.jpg"})

    per_model = {"clip": [hit("a", 0.9), hit("b", 0.8)], "dinov2": [hit("b", 0.7), hit("d", 0.6)]}
    assert missing([per_model]) == {"clip": {"d"}, "dinov2": {"a"}}
    assert missing([per_model, {"clip": [hit("x", 0.1)], "dinov2": []}]) == {"clip": {"d"}, "dinov2": {"a", "x"}}
    queries = {"clip": np.array([1.0, 0.0], np.float32), "dinov2": np.array([0.0, 1.0], np.float32)}
    vectors = {"clip": {"d": np.array([0.25, 0.97], np.float32)}, "dinov2": {"a": np.array([0.6, 0.8], np.float32)}}

    fused = assemble(per_model, queries, vectors, Method("weighted"), k=3)
    by_id = {h.id: h for h in fused}
    assert by_id["a"].scores == pytest.approx({"clip": 0.9, "dinov2": 0.8})  # dinov2's from the fetched vector
    assert by_id["d"].scores == pytest.approx({"clip": 0.25, "dinov2": 0.6})
    assert by_id["a"].ranks == {"clip": 1, "dinov2": None} and by_id["b"].ranks == {"clip": 2, "dinov2": 1}
    assert [h.id for h in fused] == ["a", "b", "d"] and fused[0].score == pytest.approx(0.85)
    assert by_id["d"].path == "/p/d.jpg"

    ranked = assemble(per_model, queries, vectors, Method("rrf", rrf_k=60), k=2)
    assert [h.id for h in ranked] == ["b", "a"] and ranked[0].score == pytest.approx(1 / 62 + 1 / 61)
    alone = assemble(per_model, queries, vectors, Method("none"), k=5)
    assert [(h.id, h.score) for h in alone] == [("a", 0.9), ("b", 0.8)]  # the first model's own list
    weights = assemble(per_model, queries, vectors, Method("weighted", weights={"clip": 0.0, "dinov2": 1.0}), k=1)
    assert weights[0].id == "a" and weights[0].score == pytest.approx(0.8)
