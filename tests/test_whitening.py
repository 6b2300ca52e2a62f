"""PCA-whitening as data (imsim.whitening) and the duplicate groups that do not chain (imsim.duplicates.linked_groups):
pure functions, checked against hand-made cases and against the textbook formulation."""

from __future__ import annotations

import numpy as np
import pytest

from imsim.duplicates import components, linked_groups
from imsim.whitening import Covariance, Whitening, learn


def correlated(n: int = 500, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)).astype(np.float32)


def test_whitening_decorrelates_the_training_set():
    x = correlated()
    w = learn(x, eps_ratio=0.0)
    y = (x - w.mean) @ w.projection
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(8), atol=1e-4)


def test_streamed_sums_learn_the_same_whitening_as_one_batch():
    x = correlated(1000, 16)
    streamed = Covariance(16)
    for start in range(0, 1000, 77):  # uneven batches, as a store's pages come
        streamed.add(x[start : start + 77])
    a, b = streamed.whitening(8), learn(x, 8)
    assert a.rows == b.rows == 1000 and a.dim == b.dim == 8
    np.testing.assert_allclose(a.apply(x[:50]), b.apply(x[:50]), atol=1e-5)
    assert a.digest == b.digest  # the sign of each axis is fixed: the same data, the same transform


def test_whitening_agrees_with_the_svd_formulation_the_harness_used():
    """The harness's earlier PCA-whitening (SVD of the centred training matrix, eigenvalues floored at eps x their
    mean): the same cosines to float rounding, so the same rankings."""
    x = correlated(300, 12, seed=3)
    mean = x.mean(axis=0)
    _, sing, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = sing**2 / (len(x) - 1)
    projection = vt.T / np.sqrt(var + 1e-2 * var.mean())
    reference = (x - mean) @ projection
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    ours = learn(x).apply(x)
    np.testing.assert_allclose(np.abs(ours @ ours.T - reference @ reference.T), 0, atol=1e-4)


def test_whitening_keeps_dim_axes_and_normalises():
    x = correlated(200, 10)
    w = learn(x, dim=4)
    y = w.apply(x)
    assert y.shape == (200, 4) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    assert (np.diff(w.variances) <= 1e-9).all()  # strongest axes first
    with pytest.raises(ValueError, match="10-d vectors"):
        w.apply(np.zeros((2, 9), np.float32))


def test_fewer_rows_than_dimensions_keep_only_what_the_rows_span():
    w = learn(correlated(5, 16))
    assert w.dim == 4  # five centred rows span four directions
    with pytest.raises(ValueError, match="at least 2"):
        learn(correlated(1, 16))


def test_a_whitening_survives_bytes_exactly():
    w = learn(correlated(100, 6), dim=5)
    back = Whitening.from_bytes(w.to_bytes())
    assert back.digest == w.digest and back.rows == 100 and back.eps_ratio == w.eps_ratio
    np.testing.assert_array_equal(back.projection, w.projection)
    assert learn(correlated(100, 6, seed=9)).digest != w.digest


# --- duplicate groups that do not chain -----------------------------------------------------------------


def test_one_link_between_two_linked_pairs_does_not_join_them():
    edges = [("a", "b", 0.99), ("c", "d", 0.98), ("b", "c", 0.95)]
    assert components("abcd", edges) == [["a", "b", "c", "d"]]  # connected components chain them
    assert linked_groups("abcd", edges, 0.5) == [["a", "b"], ["c", "d"]]
    assert linked_groups("abcd", edges, 0.0) == components("abcd", edges)


def test_copies_sharing_an_overlay_frame_stay_with_their_originals():
    """Three originals, each with an edited copy; the copies share a frame, so they link to each other (weaker than
    to their originals). Components: one group of six (precision 3/15); with link share: three true pairs."""
    pairs = [("o1", "c1", 0.97), ("o2", "c2", 0.96), ("o3", "c3", 0.95)]
    frame = [("c1", "c2", 0.93), ("c1", "c3", 0.92), ("c2", "c3", 0.91)]
    ids = ["o1", "o2", "o3", "c1", "c2", "c3"]
    assert len(components(ids, pairs + frame)[0]) == 6
    assert linked_groups(ids, pairs + frame) == [["c1", "o1"], ["c2", "o2"], ["c3", "o3"]]


def test_a_dense_group_still_forms_and_a_single_can_join_a_pair():
    clique = [(a, b, 0.9) for i, a in enumerate("pqrs") for b in "pqrs"[i + 1 :]]
    assert linked_groups("pqrs", clique) == [["p", "q", "r", "s"]]
    # x links to one of a pair: 1 of 2 pairs between them is linked, enough at 0.5, not at 0.75
    edges = [("a", "b", 0.99), ("b", "x", 0.9)]
    assert linked_groups("abx", edges, 0.5) == [["a", "b", "x"]]
    assert linked_groups("abx", edges, 0.75) == [["a", "b"]]


def test_a_join_made_later_can_enable_another():
    """{a,b} and {c} each link to d and e; the share test is repeated until nothing merges."""
    edges = [("a", "b", 0.99), ("d", "e", 0.98), ("a", "d", 0.9), ("b", "e", 0.89), ("a", "e", 0.88), ("b", "d", 0.87)]
    assert linked_groups("abde", edges) == [["a", "b", "d", "e"]]
