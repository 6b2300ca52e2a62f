"""Near-duplicate groups over stored images: connected components above a calibrated (or given) threshold."""

from __future__ import annotations

import pytest

from imsim import calibration
from imsim.client.local import Client
from imsim.duplicates import components, find_groups
from imsim.errors import ImsimError
from imsim.expr import Where
from imsim.ingest import Ingestor, ingest_local
from imsim.sources.paths import discover
from imsim.store import VectorStore

from .support.settings import make_settings


def test_components_join_chains_and_drop_singletons():
    edges = [("a", "b", 0.9), ("b", "c", 0.95), ("x", "y", 0.99)]
    assert components(["a", "b", "c", "d", "x", "y"], edges) == [["a", "b", "c"], ["x", "y"]]
    assert components(["a"], []) == []


@pytest.fixture()
def stored(tiny_model_dirs, tmp_path, copies):
    folder, expected = copies
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    store = VectorStore(settings)
    ingestor = Ingestor(settings, store=store)
    ingest_local(discover([folder]).files, settings, ingestor=ingestor)
    ingestor.close()
    yield Client(settings, store=store), expected
    store.close()


def paths_of(groups):
    return sorted((sorted(p for _, p in g.members) for g in groups), key=lambda g: g[0])


def test_groups_from_a_given_threshold_per_model_and_fused(stored):
    client, expected = stored
    for model in ("dinov2", "clip", "fused"):
        groups, used, name = find_groups(client, model=model, threshold=0.9999)
        assert paths_of(groups) == expected and used.source == "given" and name == model
        assert all(s >= 0.9999 for g in groups for _, _, s in g.edges)


def test_calibrated_threshold_is_used_and_missing_ones_are_a_clear_error(stored):
    client, expected = stored
    with pytest.raises(ImsimError, match="no threshold for dinov2@.*imsim eval run"):
        find_groups(client)  # IMSIM_MODELS=clip,dinov2: the copy-oriented default is dinov2
    version = client.store.versions.properties(client.models.collection("dinov2"))["version"]
    calibration.save(
        client.settings.data_dir,
        {calibration.version_key("dinov2", version): {"threshold_p90": 0.99, "threshold_p95": 0.9999, "benchmark": "/bench/x"}},
    )
    groups, used, model = find_groups(client)
    assert (
        model == "dinov2" and used.value == 0.9999 and "calibrated: 95 % precision" in used.source and "/bench/x" in used.source
    )
    assert paths_of(groups) == expected
    looser, used, _ = find_groups(client, precision=0.9)
    assert used.value == 0.99 and sum(len(g.members) for g in looser) >= sum(len(g.members) for g in groups)


def test_filters_limit_the_groups(stored, copies):
    client, expected = stored
    folder, _ = copies
    only = expected[0][0].rsplit("/", 1)[1].split("-")[0].split(".")[0]  # the stem of one photo with copies
    groups, _, _ = find_groups(client, model="dinov2", threshold=0.9999, where=Where(path_glob=str(folder / f"{only}*")))
    assert paths_of(groups) == [expected[0]]


def test_family_defaults_are_the_documented_measurements():
    """A default threshold exists only with its measurement in docs/duplicates.md (same value, same model)."""
    import re
    from pathlib import Path

    from imsim.duplicates import DEFAULT_THRESHOLDS

    doc = (Path(__file__).parents[1] / "docs" / "duplicates.md").read_text()
    documented = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| `([\w@]+)` \| ([0-9.]+) \|", doc, re.M)}
    assert documented == {name: value for name, (value, _) in DEFAULT_THRESHOLDS.items()}
    assert all("@" in key for key in DEFAULT_THRESHOLDS)  # each belongs to one model version, never to a family


def test_duplicates_on_an_empty_store_says_nothing_was_ingested(tiny_model_dirs, tmp_path, models):
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    with Client(settings, embedders=models) as client, pytest.raises(ImsimError, match="nothing ingested yet for model 'dinov2'"):
        find_groups(client, model="dinov2", threshold=0.9)


def test_fused_pages_within_a_block_come_from_one_ranking(stored):
    """A fused ranking depends on how deep each model's list goes; pages asked with an offset came from rankings of
    different depths and repeated an image across pages (the search page's "load more" showed 39 images for 40).
    Within a block of PAGE_BLOCK results, every page is a slice of one ranking."""
    from imsim.client.local import PAGE_BLOCK

    client, _ = stored
    query = client.models.embed_many([str(next(iter(client.store.rows.iter_rows(client.models.collection("clip"))))[0]["path"])])
    whole = [h.id for h in client.search_batch(query, k=16, fusion="rrf")[0]]
    pages = [h.id for offset in range(0, 16, 3) for h in client.search_batch(query, k=3, fusion="rrf", offset=offset)[0]]
    assert pages == whole and len(set(pages)) == 16 <= PAGE_BLOCK
