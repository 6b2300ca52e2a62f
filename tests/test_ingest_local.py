"""The in-process pipeline and the client on a Milvus Lite file: ingest, self-search, re-ingest, bad files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from imsim.client.local import Client
from imsim.errors import ImsimError, ModelError
from imsim.ingest import Ingestor, ingest_local
from imsim.sources.names import path_id
from imsim.sources.paths import discover
from imsim.store import VectorStore
from imsim.store.rows import Rows


@pytest.fixture()
def ingested(settings, models, image_folder):
    (image_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    store = VectorStore(settings)
    ingestor = Ingestor(settings, embedders=models, store=store)
    files = discover([image_folder]).files
    result = ingest_local(files, settings.replace(chunk_size=10), ingestor=ingestor, job_id="job-1")
    good = [f for f in files if not f.endswith("broken.jpg")]
    assert len(files) == 39 and len(good) == 38
    yield settings, store, ingestor, good, result
    ingestor.close()
    store.close()


def test_ingest_stores_every_good_image_and_records_the_bad_one(ingested, image_folder):
    settings, store, ingestor, files, result = ingested
    assert result.done == 38
    assert list(result.failures) == [str(image_folder / "broken.jpg")]
    assert "cannot decode" in result.failures[str(image_folder / "broken.jpg")]
    for name in ingestor.collections.values():
        assert store.rows.count(name) == 38
    chelsea = str(image_folder / "photos" / "chelsea.jpg")
    row = store.rows.get(
        ingestor.collections["clip"], [path_id(chelsea)], output_fields=["path", "job_id", "model_revision", "width", "height"]
    )
    assert row[path_id(chelsea)]["path"] == chelsea and row[path_id(chelsea)]["job_id"] == "job-1"
    assert (row[path_id(chelsea)]["width"], row[path_id(chelsea)]["height"]) == (451, 300)
    t = result.times
    assert t.decode > 0 and t.resize > 0 and set(t.embed) == set(t.write) == {"clip", "dinov2"} and t.cpu["decode"] > 0


def test_every_image_is_found_first_by_itself_per_model_and_fused(ingested, models):
    settings, store, ingestor, files, _ = ingested
    client = Client(settings, embedders=models, store=store)
    for path in files:
        for fusion in ("rrf", "weighted"):
            hits = client.search(path, k=3, fusion=fusion)
            assert hits[0].path == path, (path, fusion, hits[:2])
            assert hits[0].ranks == {"clip": 1, "dinov2": 1}
            assert hits[0].scores["clip"] == pytest.approx(1.0, abs=1e-4)
        for model in ("clip", "dinov2"):
            assert client.search(path, k=1, models=[model], fusion="none")[0].path == path


def test_fused_hits_carry_every_models_score(ingested, models):
    settings, store, _, files, _ = ingested
    client = Client(settings, embedders=models, store=store)
    hits = client.search(files[0], k=10, fusion="weighted")
    q = client.models.embed(files[0])
    for h in hits:
        assert set(h.scores) == {"clip", "dinov2"}  # filled in even when only one model ranked it
        assert h.score == pytest.approx((h.scores["clip"] + h.scores["dinov2"]) / 2, abs=1e-5)
        vec = store.rows.get_vectors(store.versions.collection_name(models["clip"].info), [h.id])[h.id]
        assert h.scores["clip"] == pytest.approx(float(np.dot(vec, q["clip"])), abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_reingest_skips_unchanged_and_leaves_row_counts_unchanged(ingested):
    settings, store, ingestor, files, first = ingested
    assert first.read_bytes == sum(os.path.getsize(f) for f in files) + len(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    again = ingest_local(files, settings, ingestor=ingestor)
    assert (again.done, again.skipped, again.failures, again.read_bytes) == (0, 38, {}, 0)  # not one byte read
    forced = ingest_local(files, settings, ingestor=ingestor, force=True)
    assert (forced.done, forced.skipped) == (38, 0)
    for name in ingestor.collections.values():
        assert store.rows.count(name) == 38


def test_edited_file_is_re_embedded_and_others_skipped(ingested):
    settings, store, ingestor, files, _ = ingested
    from PIL import Image

    edited = files[3]
    Image.open(edited).convert("RGB").rotate(90).save(edited, "PNG" if edited.endswith(".png") else "JPEG")
    again = ingest_local(files, settings, ingestor=ingestor)
    assert (again.done, again.skipped) == (1, 37)
    row = store.rows.get(ingestor.collections["dinov2"], [path_id(edited)], output_fields=["sha256"])[path_id(edited)]
    import hashlib

    assert row["sha256"] == hashlib.sha256(open(edited, "rb").read()).hexdigest()
    assert store.rows.count(ingestor.collections["dinov2"]) == 38


def test_unchanged_is_decided_by_size_mtime_and_inode_unread_and_checksum_reads(ingested, image_folder):
    """As rsync: a file whose size, mtime and inode match its row is skipped without being read, so a file rewritten
    in place with the same size and mtime is not noticed (its new bytes are never read) unless --checksum."""
    settings, store, ingestor, files, _ = ingested
    target = files[7]
    st = os.stat(target)
    with open(target, "r+b") as fh:  # same inode, same size: garbage
        fh.write(b"\0" * st.st_size)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    trusted = ingest_local(files, settings, ingestor=ingestor)
    assert (trusted.done, trusted.skipped, trusted.failures, trusted.read_bytes) == (0, 38, {}, 0)
    checked = ingest_local(files, settings, ingestor=ingestor, checksum=True)
    assert checked.read_bytes == sum(os.path.getsize(f) for f in files) and list(checked.failures) == [target]


def test_a_touched_file_is_read_once_restamped_not_re_embedded_then_skipped_unread(ingested):
    settings, store, ingestor, files, _ = ingested
    target = files[2]
    collection = ingestor.collections["clip"]
    before = store.rows.get(collection, [path_id(target)], ["mtime", "ingested_at", "vector"])[path_id(target)]
    os.utime(target, (1_000_000_000, 1_000_000_000))
    touched = ingest_local(files, settings, ingestor=ingestor)
    assert (touched.done, touched.skipped, touched.updated, touched.read_bytes) == (0, 38, 1, os.path.getsize(target))
    after = store.rows.get(collection, [path_id(target)], ["mtime", "ingested_at", "vector"])[path_id(target)]
    assert after["mtime"] == 1_000_000_000 and after["vector"] == before["vector"]
    assert after["ingested_at"] == before["ingested_at"]  # the vector was made then, not now
    assert ingest_local(files, settings, ingestor=ingestor).read_bytes == 0


def test_new_tags_are_merged_into_stored_rows_without_re_embedding(ingested, models):
    settings, store, ingestor, files, _ = ingested
    ingest_local(files[:5], settings, ingestor=ingestor, tags={"kind": "photo", "set": "a"})
    retagged = ingest_local(files[:5], settings, ingestor=ingestor, tags={"set": "b"})
    assert (retagged.done, retagged.skipped, retagged.updated, retagged.read_bytes) == (0, 5, 5, 0)
    for collection in ingestor.collections.values():
        rows = store.rows.get(collection, [path_id(f) for f in files[:6]], ["tags"])
        assert [rows[path_id(f)]["tags"] for f in files[:6]] == [{"kind": "photo", "set": "b"}] * 5 + [{}]
    same = ingest_local(files[:5], settings, ingestor=ingestor, tags={"set": "b"})
    assert (same.skipped, same.updated) == (5, 0)  # tags already there: nothing rewritten
    client = Client(settings, embedders=models, store=store)
    hits = client.search(files[0], k=3, where=__import__("imsim").Where(tags={"set": "b"}))
    assert hits[0].path == files[0] and hits[0].scores["clip"] == pytest.approx(1.0, abs=1e-4)


def test_text_search_and_errors(ingested, models):
    settings, store, _, _, _ = ingested
    client = Client(settings, embedders=models, store=store)
    hits = client.search(text="a cat", k=5)
    assert len(hits) == 5 and set(hits[0].scores) == {"clip"}
    with pytest.raises(ModelError, match="has a text tower; text search needs one of clip, siglip2"):
        client.search(text="a cat", models=["dinov2"])
    with pytest.raises(ImsimError, match="exactly one"):
        client.search()
    for blank in ("", "  \n"):  # CLIP embeds an empty string happily: the results would mean nothing
        with pytest.raises(ImsimError, match="text query is empty"):
            client.search(text=blank)
    with pytest.raises(ImsimError, match="unknown fusion"):
        client.search(text="x", fusion="borda")


def test_compare_is_cosine_per_model(ingested, models):
    settings, store, _, files, _ = ingested
    client = Client(settings, embedders=models, store=store)
    same = client.compare(files[0], files[0])
    assert same == {"clip": pytest.approx(1.0, abs=1e-5), "dinov2": pytest.approx(1.0, abs=1e-5)}
    other = client.compare(files[0], files[5])
    assert all(-1 <= v < 0.9999 for v in other.values())


def test_a_finished_ingest_seals_every_collection_it_wrote(settings, models, image_folder):
    """Rows left in growing segments are searched by brute force (10x slower on Lite): the end of a job flushes."""

    class CountingRows(Rows):  # the real rows part on a real Milvus Lite file, counting its flushes
        flushed: list[str] = []

        def flush(self, name: str, *, wait: bool = True) -> None:
            super().flush(name)
            self.flushed.append(name)

    store = VectorStore(settings)
    store.rows = counted = CountingRows(store.connection, store.versions)
    ingestor = Ingestor(settings, embedders=models, store=store)
    ingest_local(discover([image_folder / "photos"]).files, settings, ingestor=ingestor)
    assert sorted(counted.flushed) == sorted(ingestor.collections.values())
    counted.flushed.clear()
    ingest_local([], settings, ingestor=ingestor)  # nothing written: nothing to seal
    assert counted.flushed == []
    ingestor.close()
    store.close()


def test_the_skip_check_is_one_bounded_read_per_model_per_block_of_slices(settings, models, image_folder, monkeypatch):
    """A Strong read waits for a Milvus server's next time tick (~0.2 s): two per 64-image slice capped a worker at
    ~100 images/s. Skip checks read Bounded (a row they miss is re-embedded: harmless), one read per model for a block
    of whole slices (up to LOOKUP_IDS ids: each request costs a round trip), issued ahead of the block's files."""
    from imsim import ingest

    class Counting(Rows):
        reads: list[tuple[int, str]] = []

        def get(self, name, ids, output_fields=("path",), consistency="Strong"):
            self.reads.append((len(ids), consistency))
            return super().get(name, ids, output_fields, consistency)

    store = VectorStore(settings)
    store.rows = counting = Counting(store.connection, store.versions)
    ingestor = Ingestor(settings, embedders=models, store=store)
    files = discover([image_folder]).files  # 38 files, slices of batch_size=16: 16, 16, 6
    ingest_local(files, settings, ingestor=ingestor)
    assert sorted(counting.reads) == [(38, "Bounded")] * 2  # one block: 38 ids <= LOOKUP_IDS
    counting.reads.clear()
    monkeypatch.setattr(ingest, "LOOKUP_IDS", 40)  # blocks of whole slices: 32 ids (2 slices), then 6
    result = ingest_local(files, settings, ingestor=ingestor)
    assert result.skipped == 38 and sorted(counting.reads) == sorted([(32, "Bounded"), (6, "Bounded")] * 2)
    ingestor.close()
    store.close()


def test_a_chunk_stopped_mid_block_counts_every_file_it_left_unread(settings, models, image_folder, monkeypatch):
    """``should_stop`` is asked before each slice; what is left (the rest of this block and every later block) is
    counted as cancelled, so done + cancelled is the chunk."""
    from imsim import ingest

    files = discover([image_folder]).files  # slices of 16, 16, 6
    for lookup_ids, asked in ((16, 2), (1024, 2), (1024, 3)):  # blocks of one slice each, or one block of all
        monkeypatch.setattr(ingest, "LOOKUP_IDS", lookup_ids)
        with Ingestor(settings.replace(data_dir=settings.data_dir / f"{lookup_ids}-{asked}"), embedders=models) as ingestor:
            asked_so_far: list[int] = []

            def stop(limit: int = asked, seen: list[int] = asked_so_far) -> bool:
                seen.append(1)
                return len(seen) >= limit

            result = ingestor.ingest(files, should_stop=stop)
            stored = 16 * (asked - 1)
            assert (result.done, result.cancelled) == (stored, len(files) - stored)


def test_files_an_earlier_attempt_of_the_same_job_stored_count_as_done(settings, models, image_folder):
    """A chunk whose worker died (or whose store went away) after writing a slice is run again: the rows it finds
    carry its own job id, so they count as this job's work (done), not as files stored unchanged before it."""
    files = discover([image_folder]).files
    with Ingestor(settings, embedders=models) as ingestor:
        first = ingestor.ingest(files[:10], job_id="job-a")  # the attempt that stored one part, then died
        again = ingestor.ingest(files, job_id="job-a")
        assert (first.done, again.done, again.skipped) == (10, len(files), 0)
        other = ingestor.ingest(files, job_id="job-b")  # another job: everything was stored before it
        unnamed = ingestor.ingest(files)  # no job id (a local ingest): stored rows are unchanged files
        assert (other.done, other.skipped, unnamed.done, unnamed.skipped) == (0, len(files), 0, len(files))
