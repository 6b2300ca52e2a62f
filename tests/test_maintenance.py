"""Stale rows and deletion (``imsim sync``, ``imsim delete``), safe filter expressions, the read allow-list."""

from __future__ import annotations

import os
import shutil

import pytest

from imsim import expr
from imsim.client.local import Client
from imsim.errors import PathNotAllowed
from imsim.sources.reading import Limits, read_file
from imsim.store import VectorStore
from imsim.store.rows import Rows
from imsim.store.searching import Searching

from .support.rows import row as make_row
from .support.servers import SAMPLES
from .support.settings import make_settings


def test_selection_never_crosses_into_a_sibling_folder(tiny_model_dirs, tmp_path, models):
    """LIKE 'root%' also matches 'root_2/...'; selection re-checks the path exactly."""
    from imsim.ingest import Ingestor, ingest_local
    from imsim.maintenance import select

    for folder in ("set", "set_2", "set%x"):
        (tmp_path / folder).mkdir()
        shutil.copy(SAMPLES / "photos" / "coffee.jpg", tmp_path / folder / "a.jpg")
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    store = VectorStore(settings)
    ingestor = Ingestor(settings, embedders=models, store=store)
    ingest_local([str(tmp_path / f / "a.jpg") for f in ("set", "set_2", "set%x")], settings, ingestor=ingestor)
    assert set(select(store, [str(tmp_path / "set")]).values()) == {str(tmp_path / "set" / "a.jpg")}
    assert set(select(store, [str(tmp_path / "set%x")]).values()) == {str(tmp_path / "set%x" / "a.jpg")}
    # The client takes one selector as a plain string: it must not become one selector per character ("/" = all).
    client = Client(settings, embedders=models, store=store)
    assert client.delete(str(tmp_path / "set" / "a.jpg")) == {c: 1 for c in ingestor.collections.values()}
    assert all(store.rows.count(c) == 2 for c in ingestor.collections.values())
    ingestor.close()
    store.close()


def test_expressions_quote_user_values():
    hostile = '/x" or id != "'
    assert expr.eq("path", hostile) == r'path == "/x\" or id != \""'
    assert expr.like_prefix("path", 'a\\b"_%') == r'path like "a\\\\b\"\\_\\%%"'  # LIKE wildcards escaped too
    assert expr.like_prefix("path", "a_b%c", "prefix") == 'path like "a_b%"'  # Milvus 2.3: a literal prefix only
    assert expr.both(expr.eq("width", 3), "", expr.eq("job_id", "j")) == '(width == 3) and (job_id == "j")'
    with pytest.raises(ValueError):
        expr.eq("path or 1", "x")
    with pytest.raises(ValueError):
        expr.number(float("nan"))
    assert expr.path_under("/a/b/c.jpg", "/a/b") and not expr.path_under("/a/bc/d.jpg", "/a/b")


def test_hostile_path_is_one_string_to_milvus(settings, models):
    from imsim.ingest import Ingestor

    store = VectorStore(settings)
    name = Ingestor(settings, embedders={"clip": models["clip"]}, store=store).collections["clip"]
    row = make_row("x" * 32, '/x" or id != "', [1.0] + [0.0] * (models["clip"].info.dim - 1))
    store.rows.upsert(name, [row])
    other = dict(row, id="y" * 32, path="/y.jpg")
    store.rows.upsert(name, [other])
    found = [r for batch in store.rows.iter_rows(name, expr.eq("path", row["path"]), ["path"]) for r in batch]
    assert [r["path"] for r in found] == [row["path"]]
    store.close()


def test_allowed_roots_follow_symlinks(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    shutil.copy(SAMPLES / "photos" / "coffee.jpg", inside / "ok.jpg")
    shutil.copy(SAMPLES / "photos" / "coffee.jpg", outside / "secret.jpg")
    os.symlink(outside / "secret.jpg", inside / "link.jpg")
    roots = [os.path.realpath(inside)]
    limits = Limits(allowed_roots=tuple(roots))
    assert read_file(inside / "ok.jpg", limits).file_size > 0
    for path in (inside / "link.jpg", outside / "secret.jpg", inside / ".." / "out" / "secret.jpg"):
        with pytest.raises(PathNotAllowed, match="outside the allowed roots"):
            read_file(path, limits)
    assert read_file(outside / "secret.jpg").file_size > 0  # no roots: any path


class RecordingRows(Rows):
    """The real rows part, recording how rows are read and deleted."""

    def __init__(self, *args):
        super().__init__(*args)
        self.calls: list[str] = []
        self.streamed = 0  # rows read back by iter_rows

    def iter_rows(self, *args, **kwargs):
        self.calls.append("iter_rows")
        for batch in super().iter_rows(*args, **kwargs):
            self.streamed += len(batch)
            yield batch

    def get(self, *args, **kwargs):
        self.calls.append("get")
        return super().get(*args, **kwargs)

    def delete(self, name, ids):
        self.calls.append(f"delete {len(ids)} ids")
        return super().delete(name, ids)

    def delete_where(self, name, filter):
        self.calls.append("delete_where")
        return super().delete_where(name, filter)


class RecordingStore(VectorStore):
    """The real store on a real Milvus Lite file, its rows part recording how rows are read and deleted."""

    def __init__(self, settings):
        super().__init__(settings)
        self.rows = self.recorded = RecordingRows(self.connection, self.versions)
        self.searching = Searching(self.connection, self.versions, self.rows)


def test_a_folder_is_counted_sampled_and_deleted_server_side_and_a_glob_streams(tiny_model_dirs, tmp_path, models):
    """Deleting a folder held every matching row of every collection in one dict, sorted them all for a 10-line
    sample and read every id again before deleting (100k rows: 155 s). Now a folder is one delete by expression per
    collection, nothing streamed to the client; a glob streams ids in batches."""
    from imsim import maintenance
    from imsim.ingest import Ingestor

    from .support.rows import random_rows

    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    store = RecordingStore(settings)
    ingestor = Ingestor(settings, embedders=models, store=store)
    for model, collection in ingestor.collections.items():
        store.rows.upsert(collection, random_rows(3000, models[model].info.dim)[0])
    store.recorded.calls.clear()
    folder = [maintenance.resolve(store, "/corpus/d3")]
    assert maintenance.count(store, folder) == {c: 300 for c in ingestor.collections.values()}
    assert len(maintenance.sample(store, folder)) == maintenance.SAMPLE
    assert maintenance.delete(store, folder) == {c: 300 for c in ingestor.collections.values()}
    assert "iter_rows" not in store.recorded.calls and "get" not in store.recorded.calls
    assert store.recorded.calls.count("delete_where") == 2
    store.recorded.calls.clear()
    glob = [maintenance.resolve(store, "/corpus/d[45]/1*.jpg")]
    assert maintenance.delete(store, glob) == {c: 222 for c in ingestor.collections.values()}
    assert all(c == "iter_rows" or c.startswith("delete ") for c in store.recorded.calls)
    assert store.recorded.streamed == 2 * 222  # only the rows under d4/1 and d5/1 were read back, not the 2,700 under /corpus
    assert all(store.rows.count(c) == 3000 - 300 - 222 for c in ingestor.collections.values())
    ingestor.close()
    store.close()


def test_a_globs_prefixes_cover_every_match_and_narrow_the_folder():
    """The store pre-filters a glob on its literal prefixes: every path the glob matches must start with one of them
    (checked against the matcher on every path of a generated tree), and a class is expanded only while that makes few
    prefixes."""
    import itertools

    from imsim.sources.names import Glob

    assert Glob("/c/d[23]/**").prefixes() == ["/c/d2/", "/c/d3/"]
    assert Glob("/c/img*.jpg").prefixes() == ["/c/img"]
    assert Glob("/c/[!a]x").prefixes() == ["/c/"]  # a negated class ends the prefix
    assert Glob("/c/[0-9][0-9][0-9]").prefixes() == [f"/c/{i}" for i in range(10)]  # 100 would be over the limit
    assert Glob("/c/[[]a").prefixes() == ["/c/[a"]
    names = ["a", "b", "d2", "d3", "d23", "x_y", "[a", "%", "é"]
    paths = ["/c/" + "/".join(p) for n in (1, 2, 3) for p in itertools.product(names, repeat=n)]
    patterns = ["/c/d[23]/**", "/c/d[23]*", "/c/[ab]/[!a]*", "/c/*/d2", "/c/**/b", "/c/[[]a/?", "/c/[a-d]?/[%_]", "/c/d2/[b-e]*"]
    for pattern in patterns:
        glob = Glob(pattern)
        prefixes = glob.prefixes()
        matched = [p for p in paths if glob.match(p)]
        assert matched, pattern
        assert all(any(p.startswith(x) for x in prefixes) for p in matched), (pattern, prefixes)
