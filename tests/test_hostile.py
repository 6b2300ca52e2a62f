"""Hostile input, tried as an attacker would: a memory bomb by aspect ratio, a symlink swapped while a file is
opened, a filter that tries to break out of the AND, globs that must not cross folders, path filters that must
still return k results, names no store can hold, and credentials that must never be printed."""

from __future__ import annotations

import os
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imsim import expr
from imsim.client.local import Client
from imsim.errors import BadPath, FilterError, PathNotAllowed
from imsim.ingest import ingest_local
from imsim.sources.names import glob_match, path_id, printable
from imsim.sources.paths import discover, read_path_list
from imsim.sources.reading import Limits, read_file
from imsim.store import VectorStore

from .support.rows import row
from .support.servers import SAMPLES

PHOTO = SAMPLES / "photos" / "coffee.jpg"


def test_crop_models_resample_only_the_crop_of_an_extreme_image(models):
    clip = models["clip"].preprocess
    wide = np.full((1, 50_000, 3), 120, np.uint8)
    out = clip.to_uint8(wide)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8 and abs(int(out.mean()) - 120) <= 1


def test_a_symlink_swapped_while_reading_never_yields_an_outside_file(tmp_path):
    """The allowed-roots check is made on the file actually opened: a link flipped between an inside and an
    outside target, as fast as a thread can, never makes read_file return the outside file's bytes."""
    inside, outside = tmp_path / "root", tmp_path / "secret"
    inside.mkdir()
    outside.mkdir()
    (inside / "ok.jpg").write_bytes(b"inside" * 100)
    (outside / "secret.jpg").write_bytes(b"SECRET" * 100)
    link = inside / "photo.jpg"
    limits = Limits(allowed_roots=(os.path.realpath(inside),))
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for target in (inside / "ok.jpg", outside / "secret.jpg"):
                tmp = inside / ".swap"
                try:
                    os.symlink(target, tmp)
                    os.replace(tmp, link)
                except OSError:
                    pass

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    outcomes = {"inside": 0, "refused": 0}
    try:
        for _ in range(4000):
            try:
                data = read_file(link, limits).data
            except PathNotAllowed:
                outcomes["refused"] += 1
                continue
            except Exception:  # the link was mid-swap: missing for an instant
                continue
            assert b"SECRET" not in data, "read a file outside the allowed roots"
            outcomes["inside"] += 1
    finally:
        stop.set()
        thread.join()
    assert outcomes["inside"] > 0 and outcomes["refused"] > 0  # both targets were really seen


def test_a_fifo_named_like_an_image_fails_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(Exception, match="not a regular file"):
        read_file(fifo)


def test_paths_the_store_cannot_hold_are_refused_one_by_one(tmp_path):
    latin1 = os.fsdecode(b"latin1-\xe9.jpg")
    with pytest.raises(BadPath, match="not valid UTF-8"):
        read_file(tmp_path / latin1)
    with pytest.raises(BadPath, match="NUL byte"):
        read_file(str(tmp_path / "a\x00b.jpg"))
    with pytest.raises(BadPath, match="bytes of UTF-8"):
        read_file("/" + "é" * 2100)
    assert printable(str(tmp_path / latin1)).endswith("latin1-\\xe9.jpg")  # how it is named in messages and records


def test_a_non_utf8_name_fails_alone_in_a_local_run(settings, models, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "fine.jpg")
    bad = os.path.join(os.fsencode(folder), b"latin1-\xe9.jpg")
    shutil.copy(os.fsencode(PHOTO), bad)
    found = discover([folder])
    assert len(found.files) == 2
    result = ingest_local(found.files, settings)
    assert result.done == 1 and list(result.failures) == [os.fsdecode(bad)]  # byte-exact: `imsim retry` finds it again
    assert printable(os.fsdecode(bad)).endswith("latin1-\\xe9.jpg")  # and named so that it always prints
    assert "not valid UTF-8" in next(iter(result.failures.values()))


def test_walks_find_every_decodable_type_and_keep_names_byte_exact(tmp_path):
    Image.open(PHOTO).save(tmp_path / "modern.avif")
    shutil.copy(PHOTO, tmp_path / "trailing space.jpg ")
    (tmp_path / "notes.txt").write_text("x")
    found = discover([tmp_path])
    assert found.files == [str(tmp_path / "modern.avif"), str(tmp_path / "trailing space.jpg ")]
    assert found.skipped == {"not an image type (.txt)": 1}
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"# a comment\n" + os.fsencode(tmp_path / "trailing space.jpg ") + b"\r\n\n")
    assert read_path_list(listing) == [str(tmp_path / "trailing space.jpg ")]  # the space kept, CRLF dropped
    assert read_file(found.files[1]).file_size == PHOTO.stat().st_size


def test_raw_filters_must_be_one_expression_over_known_fields():
    fields = {"path", "width", "tags"}
    assert expr.check_raw('path like "/a/%" and width > 3', fields) == '(path like "/a/%" and width > 3)'
    assert expr.check_raw('tags["k"] == "v" or json_contains(tags["x"], 1)', fields)
    assert expr.check_raw('path == "a) or (1==1"', fields)  # parentheses inside a string are text
    for hostile in ["1==1) or (1==1", "width > 3)", "(width > 3", 'path == "unterminated', "width > 3 ]", "x > 1"]:
        with pytest.raises(FilterError):
            expr.check_raw(hostile, fields)
    with pytest.raises(FilterError, match="no field 'colour'"):
        expr.check_raw("colour == 1", fields)


def test_a_hostile_filter_never_widens_the_other_conditions(settings, models, image_folder):
    ingest_local(discover([image_folder / "flags"]).files, settings, tags={"owner": "bob"})
    ingest_local(discover([image_folder / "photos"]).files, settings)
    with Client(settings, embedders=models) as client:
        query = str(image_folder / "photos" / "coffee.jpg")
        hits = client.search(query, k=50, where=expr.Where(tags={"owner": "bob"}))
        assert len(hits) == 24 and all("/flags/" in h.path for h in hits)
        with pytest.raises(FilterError, match="unbalanced"):
            client.search(query, k=50, where=expr.Where(tags={"owner": "bob"}), filter="1==1) or (1==1")
        with pytest.raises(FilterError, match="no field 'colour'"):
            client.search(query, k=5, filter='colour == "red"')


def test_bracket_classes_take_their_characters_literally():
    """``[[]x]`` names a literal "[x]" (the way to select a file whose name has brackets); it compiled with a
    FutureWarning from re ("possible nested set") printed to the user, and ``[^a]``, unlike ``[!a]``, could match "/"
    and so cross folders."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert glob_match("/d/[[]x]*.jpg", "/d/[x]*.jpg") and not glob_match("/d/[[]x]*.jpg", "/d/x.jpg")
        ops = "/d/a[&&~|]b"
        assert glob_match(ops, "/d/a&b") and glob_match(ops, "/d/a|b") and not glob_match(ops, "/d/a-b")
        assert glob_match("/d/[\\]", "/d/\\") and not glob_match("/d/[\\]", "/d/x")
        for negated in ("[!a]", "[^a]"):
            assert glob_match(f"/d{negated}x", "/dbx") and not glob_match(f"/d{negated}x", "/dax")
            assert not glob_match(f"/d{negated}x", "/d/x")  # a class never crosses a folder
        assert glob_match("/d/[]]", "/d/]") and glob_match("/d/[!]]", "/d/a") and not glob_match("/d/[!]]", "/d/]")


def test_one_glob_semantics_for_ingest_search_and_delete(settings, models, tmp_path):
    root = tmp_path / "pics"
    (root / "sub" / "deeper").mkdir(parents=True)
    for rel in ["a.jpg", "b.jpg", "c.jpg", "sub/d.jpg", "sub/e.jpg", "sub/deeper/f.jpg"]:
        shutil.copy(PHOTO, root / rel)
    assert glob_match(f"{root}/*.jpg", f"{root}/a.jpg") and not glob_match(f"{root}/*.jpg", f"{root}/sub/d.jpg")
    assert [Path(p).name for p in discover([f"{root}/*.jpg"]).files] == ["a.jpg", "b.jpg", "c.jpg"]
    assert len(discover([f"{root}/**/*.jpg"]).files) == 6
    ingest_local(discover([root]).files, settings)
    with Client(settings, embedders=models) as client:
        hits = client.search(str(root / "a.jpg"), k=10, where=expr.Where(path_glob=f"{root}/*.jpg"))
        assert sorted(Path(h.path).name for h in hits) == ["a.jpg", "b.jpg", "c.jpg"]
        removed = client.delete(f"{root}/*.jpg")
        assert set(removed.values()) == {3}
        assert set(client.delete(f"{root}/**/f.jpg").values()) == {1}
        left = sorted(Path(h.path).name for h in client.search(str(root / "sub" / "d.jpg"), k=10))
        assert left == ["d.jpg", "e.jpg"]


def folder_rows(store: VectorStore, name: str, dim: int, folders: dict[str, int]) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for folder, count in folders.items():
        for i in range(count):
            v = rng.normal(size=dim).astype(np.float32)
            path = f"{folder}/{i}.jpg"
            rows.append(row(path_id(path), path, v / np.linalg.norm(v)))
    store.rows.upsert(name, rows, batch=2000)
    store.rows.flush(name)


def test_under_returns_exactly_k_when_k_exist_beside_look_alike_folders(settings, models):
    """LIKE's ``_`` matches any character and a missing ``/`` matches sibling folders: ``u_x`` once filled the
    over-fetch with ``uAx`` and ``u_x2`` rows and returned 1-2 of 10."""
    store = VectorStore(settings)
    name = store.versions.ensure_collection(models["clip"].info)
    folder_rows(store, name, models["clip"].info.dim, {"/data/u_x": 12, "/data/uAx": 600, "/data/u_x2": 600})
    with Client(settings, embedders={"clip": models["clip"]}, store=store) as client:
        query = {"clip": np.ones((1, models["clip"].info.dim), np.float32)}
        for k in (1, 10, 12):
            hits = client.search_batch(query, k=k, where=expr.Where(path_prefix="/data/u_x"))[0]
            assert len(hits) == k and all(h.path.startswith("/data/u_x/") for h in hits)
        assert len(client.search_batch(query, k=50, where=expr.Where(path_prefix="/data/u_x"))[0]) == 12
        hits = client.search_batch(query, k=20, where=expr.Where(path_glob="/data/u?x/*.jpg"))[0]
        assert len(hits) == 20 and all(h.path.startswith(("/data/u_x/", "/data/uAx/")) for h in hits)
    store.close()


def _reference_regex(pattern: str):
    """The glob semantics as a (backtracking) regex, the definition the linear matcher must agree with."""
    import re

    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                out.append("(?:[^/]*/)*" if pattern.startswith("/", i) else ".*")
                i += 1 if pattern.startswith("/", i) else 0
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            j += 1 if j < n and pattern[j] in "!^" else 0
            j += 1 if j < n and pattern[j] == "]" else 0
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                negate = body.startswith(("!", "^"))
                body = re.sub(r"([\\\[\]&~|^])", r"\\\1", body[1:] if negate else body)
                out.append("[" + ("^/" if negate else "") + body + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def test_globs_match_in_linear_time_and_agree_with_the_definition():
    import random
    import time

    from imsim.errors import ImsimError
    from imsim.sources.names import Glob

    rng = random.Random(7)
    pieces = ["a", "b", "/", "*", "**", "**/", "?", "[ab]", "[!a]", "[^b]", "[a-c]", "x.jpg", "["]
    paths = ["/d/a/b/x.jpg", "/d/ab/x.jpg", "/d/x.jpg", "/dbx", "/d/[x]", "/a/b/c", "ab", "/d/ba/ab.jpg", "/", ""]
    for _ in range(3000):
        pattern = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
        path = rng.choice(paths) if rng.random() < 0.5 else "".join(rng.choice("ab/x.[]") for _ in range(rng.randint(0, 9)))
        assert Glob(pattern).match(path) == bool(_reference_regex(pattern).match(path)), (pattern, path)
    # the pattern that made the regex backtrack for minutes, against one long stored name
    hostile = "/d/" + "*a" * 12 + "*b.jpg"
    name = "/d/" + "a" * 3000 + ".jpg"
    started = time.perf_counter()
    assert not Glob(hostile).match(name)
    assert time.perf_counter() - started < 5  # it was 74 s and 177 s with 8 and 9 "*a"
    with pytest.raises(ImsimError, match="longer than 4096 bytes"):
        Glob("/d/" + "*" * 5000)


def test_a_path_swapped_mid_check_fails_that_file_alone(tmp_path, models, monkeypatch):
    """os.path.realpath raises OSError(EINVAL) when a component stops being a symlink mid-call: 230 of 230 paths
    (30 good) once failed with "chunk failed after 0 retries: OSError: [Errno 22]"."""
    import errno

    import imsim.images as images
    from imsim.embedding import EmbeddingStep
    from imsim.sources.reading import Limits

    root = tmp_path / "root"
    root.mkdir()
    files = []
    for i in range(6):
        shutil.copy(PHOTO, root / f"p{i}.jpg")
        files.append(str(root / f"p{i}.jpg"))
    real = os.path.realpath

    def racing(path, *args, **kwargs):
        if str(path).endswith("p3.jpg"):
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(images.os.path, "realpath", racing)
    step = EmbeddingStep(models, Limits(allowed_roots=(real(root),)), workers=2)
    out = step.embed_paths(files)
    step.close()
    assert sorted(out.failures) == [files[3]] and "cannot resolve the path" in out.failures[files[3]]
    assert len(out.images) == 5


def test_a_pil_image_of_no_pixels_is_an_error_naming_it(models):
    from imsim.client.queries import embed_queries
    from imsim.embedding import EmbeddingStep
    from imsim.errors import ImageDecodeError

    step = EmbeddingStep(models, workers=1)
    with pytest.raises(ImageDecodeError, match="degenerate image size 0x0"):
        embed_queries(step, [Image.new("RGB", (0, 0))])
    step.close()


def test_a_folder_the_walk_cannot_list_is_counted_not_dropped(tmp_path):
    """os.walk drops a folder it cannot list (a path over the system's length limit: ENAMETOOLONG) silently."""
    fds, depth = [os.open(tmp_path, os.O_RDONLY)], len(str(tmp_path))
    while depth < 4200:  # past PATH_MAX, made one level at a time (a path that long cannot be named whole)
        os.mkdir("d" * 200, dir_fd=fds[-1])
        fds.append(os.open("d" * 200, os.O_RDONLY, dir_fd=fds[-1]))
        depth += 201
    with open(os.open("lost.jpg", os.O_WRONLY | os.O_CREAT, dir_fd=fds[-1]), "wb") as out:
        out.write(PHOTO.read_bytes())
    for fd in fds:
        os.close(fd)
    shutil.copy(PHOTO, tmp_path / "found.jpg")
    found = discover([tmp_path])
    assert found.files == [str(tmp_path / "found.jpg")]
    assert any(reason.startswith("folder not listed") for reason in found.skipped), found.skipped


@pytest.mark.parametrize(
    "tags, words",
    [
        ("notadict", "give an object of key: value strings, not str"),
        (["a", "b"], "not list"),
        ({"k": {"n": 1}}, "the value of 'k' must be a string, not dict"),
        ({'a"b': "c"}, "must be letters, digits"),
        ({"k": "x" * 2000}, "at most 1024 characters"),
    ],
)
def test_tags_are_checked_by_one_rule_at_every_door_before_a_job_exists(tags, words, settings, tmp_path):
    """`"tags": "notadict"` queued a job whose every file then failed with a TypeError; a key no filter can select was
    stored. The same rule now answers the Client, a local ingest and the queue, before anything is queued or read."""
    from imsim.errors import InvalidInput
    from imsim.jobs.queue import enqueue
    from imsim.vocabulary import IngestOptions, check

    unreachable = settings.replace(redis_url="redis://127.0.0.1:9/0")  # refused before Redis is ever asked
    with pytest.raises(InvalidInput, match=words):
        enqueue([str(PHOTO)], unreachable, check(IngestOptions, {"tags": tags}))
    with pytest.raises(InvalidInput, match=words):
        ingest_local([str(PHOTO)], settings, tags=tags)
    with pytest.raises(InvalidInput, match=words):
        Client(unreachable).jobs.ingest([str(PHOTO)], tags=tags)
    assert expr.check_tags({"kind": "flag", "a.b-c_d": ""}) == {"kind": "flag", "a.b-c_d": ""}


def test_filters_refuse_what_no_stored_path_can_hold_and_globs_too_costly_to_match():
    with pytest.raises(FilterError, match="NUL byte"):
        expr.Where(path_prefix="/photos/\x00")
    with pytest.raises(FilterError, match="NUL byte"):
        expr.Where(path_glob="/photos/*\x00.jpg")
    with pytest.raises(FilterError, match="400 wildcards"):  # 400 of them took 17.6 s against one 4,000-character path
        expr.Where(path_glob="/x/" + "*a" * 400)
    assert expr.Where(path_glob="/x/" + "*a" * 16).accepts("/x/" + "a" * 20)


@pytest.mark.parametrize("threshold", [float("nan"), 5.0, -1.5, float("inf")])
def test_a_duplicate_threshold_is_a_cosine(threshold):
    """threshold=nan linked nothing after scanning every row (past the API's 504); threshold=5 the same."""
    from imsim.duplicates import check_threshold
    from imsim.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"lies in \[-1, 1\]"):
        check_threshold(threshold, 0.95)
    with pytest.raises(InvalidInput, match="calibrated ones are 0.9, 0.95"):
        check_threshold(0.9, 0.5)
    check_threshold(-1.0, 0.9)
    check_threshold(1.0, 0.95)
