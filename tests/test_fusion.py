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
