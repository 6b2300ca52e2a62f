"""Reviewing duplicates without a server: the operating point against hand-made pairs, the keeper rules, a threshold
measured on the collection itself (tiny models over a Milvus Lite store) that `imsim duplicates` then uses and says
so, and decisions that are rows: recorded, read back, hiding decided groups, undone, exported."""

from __future__ import annotations

import csv
import io
import json

import pytest
from PIL import Image

from imsim import review
from imsim.client.local import Client
from imsim.duplicates import NoThreshold, link, marked_pairs, resolve_threshold
from imsim.ingest import Ingestor, ingest_local
from imsim.sources.paths import discover
from imsim.store import VectorStore
from imsim.store.decisions import Decisions

from .support.settings import make_settings


def test_the_operating_point_is_the_highest_recall_keeping_the_precision_at_its_highest_score():
    pairs = [(0.99, True), (0.98, True), (0.97, False), (0.96, True), (0.95, True), (0.90, False), (0.80, True)]
    # at 0.95: 4 true of 5 (80 %); at 0.98: 2 of 2; at 0.96: 3 of 4 (75 %)
    assert review.operating_point(pairs, 0.8) == (0.95, 0.8, 0.8)
    assert review.operating_point(pairs, 0.95) == (0.98, 1.0, 0.4)
    tied = [(0.9, True), (0.9, False)]  # one threshold takes both: 50 %, never "100 % at 0.9"
    assert review.operating_point(tied, 0.9) is None
    assert review.best_precision(tied + [(0.5, True)], recall=0.5) == (0.5, 2 / 3, 1.0)  # beats 0.9's 50 %
    assert review.best_precision(tied + [(0.5, False), (0.4, True)], recall=0.5) == (0.9, 0.5, 0.5)


def test_the_keeper_rules():
    facts = {
        "a": {"width": 100, "height": 100, "file_size": 9_000, "mtime": 30, "path": "/x/a.jpg"},
        "b": {"width": 200, "height": 100, "file_size": 5_000, "mtime": 10, "path": "/x/b.jpg"},
        "c": {"width": 200, "height": 100, "file_size": 7_000, "mtime": 20, "path": "/x/long/c.jpg"},
    }
    members = ["a", "b", "c"]
    assert review.suggest_keeper(members, facts, "largest") == "c"  # most pixels, then bytes
    assert review.suggest_keeper(members, facts, "smallest") == "a"
    assert review.suggest_keeper(members, facts, "oldest") == "b"
    assert review.suggest_keeper(members, facts, "newest") == "a"
    with pytest.raises(Exception, match="unknown keeper rule"):
        review.suggest_keeper(members, facts, "prettiest")


def test_an_edited_copy_is_a_smaller_jpeg_and_the_same_seed_makes_the_same_copy():
    from imsim.images import open_image

    from .support.servers import SAMPLES

    buffer = io.BytesIO()
    open_image(str(SAMPLES / "photos" / "chelsea.jpg")).save(buffer, "PNG")
    first, again, other = (review.edited_copy(buffer.getvalue(), seed) for seed in ("x", "x", "y"))
    assert first == again and first != other
    with Image.open(io.BytesIO(first)) as copy, Image.open(buffer) as original:
        assert copy.format == "JPEG" and copy.width < original.width and copy.height < original.height


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


def test_a_threshold_measured_on_the_collection_is_kept_in_the_store_and_used(stored):
    client, _ = stored
    with pytest.raises(NoThreshold):
        resolve_threshold(client, "dinov2", None)
    used = review.ensure_threshold(client, "dinov2")
    assert used is not None and used.source.startswith("measured on this collection: edited copies of 16 of your images")
    again = resolve_threshold(client, "dinov2", None)  # read back from the store: not measured twice
    assert (again.value, again.source) == (used.value, used.source)
    reopened = Client(client.settings)  # another process's view: the same artifact
    try:
        assert resolve_threshold(reopened, "dinov2", None).value == used.value
    finally:
        reopened.close()
    assert -1.0 <= used.value <= 1.0 and resolve_threshold(client, "dinov2", None, precision=0.9).value <= used.value + 1e-9
    with pytest.raises(NoThreshold):  # a fused threshold is calibrated by `imsim eval run`, never measured here
        review.ensure_threshold(client, "fused")


def test_decisions_are_rows_that_hide_a_group_until_undone_and_export(stored):
    client, expected = stored
    linked = link(client, model="dinov2", threshold=0.9999)
    page = review.review_page(client, linked, marked_pairs(client.store, linked.paths), limit=100)
    assert page.total == len(expected) and all(not decided for _, _, decided in page.groups)
    group, keeper, _ = page.groups[0]
    members = [i for i, _ in group.members]
    made = review.resolve(client.store, keeper, members, page.facts)
    assert [d.decision for d in made] == ["keep"] + ["duplicate"] * (len(members) - 1)
    assert {d.keeper for d in made} == {keeper} and all(len(d.sha256) == 64 for d in made)
    opened = review.review_page(client, linked, [], limit=100)
    assert opened.total == len(expected) - 1 and group.members not in [g.members for g, _, _ in opened.groups]
    decided = review.review_page(client, linked, [], show="decided", limit=100)
    assert [g.members for g, _, flag in decided.groups if flag] == [group.members]
    shown = review.to_group(*decided.groups[0], decided.facts, decided.decided)
    assert shown.decided and {m.decision for m in shown.members} == {"keep", "duplicate"} and shown.members[0].width
    rows = list(csv.DictReader(io.StringIO("".join(review.export(iter(Decisions(client.store)))))))
    assert sorted(r["id"] for r in rows) == sorted(members) and {r["keeper"] for r in rows} == {keeper}
    lines = [json.loads(line) for line in review.export(iter(Decisions(client.store)), "json")]
    assert len(lines) == len(members) and all(line["keeper_path"] for line in lines)
    assert Decisions(client.store).undo(keeper) == len(members)
    assert review.review_page(client, linked, [], limit=100).total == len(expected)
    with pytest.raises(Exception, match="keeper must be one of"):
        review.resolve(client.store, "f" * 32, members, page.facts)
