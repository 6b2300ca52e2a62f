"""The in-process k-NN graph of `imsim duplicates` (imsim.analysis.neighbours), on arrays: the exact index and the
inverted file searched a cell at a time, against brute force."""

import numpy as np
import pytest

from imsim.analysis import neighbours as nb


def _copies(count: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around count // 40 topics, every third one a near copy of the row before it."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(count // 40, dim))
    v = centres[rng.integers(0, len(centres), count)] + 0.8 * rng.normal(size=(count, dim))
    v[1::3] = v[0::3][: len(v[1::3])] + 0.03 * rng.normal(size=v[1::3].shape)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _graph(vectors: np.ndarray, k: int, exact_rows: int | None, probes: int = nb.PROBES):
    found = nb.build(
        (vectors[i : i + 700] for i in range(0, len(vectors), 700)), vectors.shape[1], len(vectors), exact_rows, probes
    )
    seen = np.zeros(len(vectors), int)
    scores = np.full((len(vectors), k), np.nan, np.float32)
    positions = np.full((len(vectors), k), -2, np.int64)
    reported: list[int] = []
    for rows, s, p in nb.neighbours(found, k, reported.append):
        seen[rows] += 1
        scores[rows], positions[rows] = s, p
    assert (seen == 1).all()  # every row searched exactly once
    assert reported == sorted(reported) and reported[-1] == len(vectors)  # progress only grows, and ends at every row
    return found, scores, positions


def _edges(positions: np.ndarray, scores: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    rows = np.arange(len(positions))[:, None]
    keep = (positions >= 0) & (positions != rows) & (scores >= threshold)
    return {(min(a, b), max(a, b)) for a, b in zip(np.nonzero(keep)[0], positions[keep], strict=True)}


def test_the_inverted_file_searched_by_cell_finds_every_near_copy_that_brute_force_finds():
    vectors = _copies(6000, 48, seed=3)
    found, scores, positions = _graph(vectors, 5, exact_rows=0)
    assert not found.exact
    truth = vectors @ vectors.T
    want_positions = np.argsort(-truth, axis=1)[:, :5]
    want = _edges(want_positions, np.take_along_axis(truth, want_positions, 1), 0.95)
    assert len(want) > 1500 and _edges(positions, scores, 0.95) == want
    # each score is the true cosine of the pair it names, and each row's first neighbour is itself
    assert np.allclose(scores, np.take_along_axis(truth, positions, 1), atol=1e-5)
    assert (positions[:, 0] == np.arange(len(vectors))).all()
    # and the 5-NN graph as a whole agrees with the exact one (what the evaluation calibrates on)
    agree = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(positions, want_positions, strict=True)])
    assert agree >= 0.97


def test_the_exact_index_below_its_size_equals_brute_force():
    vectors = _copies(1200, 32, seed=5)
    found, scores, positions = _graph(vectors, 4, exact_rows=None)
    assert found.exact
    truth = vectors @ vectors.T
    assert np.allclose(np.sort(scores, axis=1), np.sort(np.sort(truth, axis=1)[:, -4:], axis=1), atol=1e-5)


def test_the_exact_threshold_is_read_when_building_not_when_imported(monkeypatch):
    """A benchmark compares the inverted file with the exact graph by raising EXACT_ROWS; a default frozen at import
    made that comparison the inverted file against itself."""
    vectors = _copies(3000, 16, seed=1)
    monkeypatch.setattr(nb, "EXACT_ROWS", 100)
    assert not _graph(vectors, 3, exact_rows=None)[0].exact
    monkeypatch.setattr(nb, "EXACT_ROWS", 10**9)
    assert _graph(vectors, 3, exact_rows=None)[0].exact


@pytest.mark.parametrize("probes", [1, 3])
def test_cells_with_fewer_candidates_than_k_pad_with_minus_one(probes):
    vectors = _copies(1000, 8, seed=2)
    _, scores, positions = _graph(vectors, 200, exact_rows=0, probes=probes)
    assert (positions[:, 0] == np.arange(len(vectors))).all()
    assert ((positions >= 0) | np.isneginf(scores)).all()
    padded = positions < 0
    assert padded.any() and not padded[:, 0].any()
    for row in positions:  # no row named twice, pads only at the end
        real = row[row >= 0]
        assert len(set(real.tolist())) == len(real) and (row[len(real) :] == -1).all()


@pytest.mark.parametrize("probes", [1, 4])
def test_searching_a_cell_at_a_time_compares_what_faiss_ivf_flat_compares_with_as_many_probes(probes):
    """The same centres in FAISS's own IVF-Flat index, searched a query at a time with ``nprobe = probes``: the same
    neighbours (scores to float rounding), because each row meets exactly the rows of the cells it probes."""
    import faiss

    vectors = _copies(4000, 24, seed=7)
    found, scores, positions = _graph(vectors, 6, exact_rows=0, probes=probes)
    quantizer = faiss.IndexFlatIP(vectors.shape[1])
    quantizer.add(found.centres)
    ivf = faiss.IndexIVFFlat(quantizer, vectors.shape[1], len(found.centres), faiss.METRIC_INNER_PRODUCT)
    ivf.is_trained = True
    ivf.add(vectors)
    ivf.nprobe = probes
    want_scores, want = ivf.search(vectors, 6)
    assert np.allclose(scores, want_scores, atol=1e-5)
    same = np.mean([set(a[a >= 0]) == set(b[b >= 0]) for a, b in zip(positions, want, strict=True)])
    assert same > 0.99  # rows differ only where two candidates tie to float rounding
