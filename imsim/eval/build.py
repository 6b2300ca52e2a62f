"""Build a DISC21-style copy-detection benchmark from any folder of real images.

The folder's images are shuffled with the seed and split into:

- **references**: the database a query is searched against (copied as they are);
- **queries with a copy**: edited copies (1-3 combined edits, :mod:`imsim.eval.edits`) of distinct references;
- **queries without a copy**: edited copies of held-out images that are *not* among the references,
  so the right answer is "no copy" (real copy detection must say so);
- optional **distractor** references from another folder (never queried, they only make the search harder);
- optional **background** images (neither queried nor referenced) for score normalisation.

Layout written under ``--out``: ``references/``, ``queries/``, ``background/``, ``ground_truth.csv``
(``query_id,reference_id``: DISC21's format, only queries with a copy), ``queries.csv`` (every query,
its reference or empty, and the edits applied) and ``manifest.json`` (seed, counts, sources, edit backend).
Ids are file names without extension. The same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import ImsimError
from ..images import load_image
from ..sources.paths import discover
from . import edits as edit_ops


class BenchmarkError(ImsimError):
    """A benchmark folder that breaks :data:`BENCHMARK_FORMAT`; the message names the file, line or id."""


@dataclass(frozen=True)
class Benchmark:
    root: Path
    references: dict[str, str]  # id -> path
    queries: dict[str, str]  # id -> path
    truth: dict[str, str]  # query id -> reference id (queries with a copy only)
    background: dict[str, str]
    sources: dict[str, str] = field(default_factory=dict)  # query id -> the original it was made from (``source``)

    def copy_classes(self) -> list[set[str]]:
        """Images (reference and query ids) that come from the same original, transitively: a query and its reference,
        and queries whose ``source`` column names the same original (two copies of one no-match image, or two queries
        of one reference). Two images of a class are a true copy pair; any other pair is not."""
        parent: dict[str, str] = {}

        def root(x: str) -> str:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        def join(a: str, b: str) -> None:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)

        for query, reference in self.truth.items():
            join(query, reference)
        by_source: dict[str, str] = {}
        for query, source in self.sources.items():
            if source:
                join(query, by_source.setdefault(source, query))
        classes: dict[str, set[str]] = {}
        for item in list(parent):
            classes.setdefault(root(item), set()).add(item)
        return [c for c in classes.values() if len(c) > 1]

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Benchmark:
        """Read and validate a benchmark folder (:data:`BENCHMARK_FORMAT`) before anything is ingested."""
        root = Path(root)
        if not root.is_dir():
            raise BenchmarkError(f"{root}: no such benchmark folder")
        csv_path = root / "queries.csv"
        if not csv_path.is_file():
            raise BenchmarkError(
                f"{root} is not a benchmark folder (no queries.csv); build one with `imsim eval build-copydetect`"
            )
        references = _ids(root, "references", required=True)
        queries = _ids(root, "queries", required=True)
        rows = _read_pairs(csv_path, allow_empty_reference=True)
        sources = _read_sources(csv_path)
        listed: dict[str, int] = {}
        truth = {}
        for line, query_id, reference_id in rows:
            if query_id in listed:
                raise BenchmarkError(f"{csv_path}:{line}: query {query_id!r} is listed twice (first on line {listed[query_id]})")
            listed[query_id] = line
            if query_id not in queries:
                raise BenchmarkError(f"{csv_path}:{line}: query {query_id!r} has no file in {root / 'queries'}")
            if reference_id:
                if reference_id not in references:
                    raise BenchmarkError(
                        f"{csv_path}:{line}: reference {reference_id!r} of query {query_id!r} has no file in "
                        f"{root / 'references'}"
                    )
                truth[query_id] = reference_id
        stray = sorted(set(queries) - set(listed))
        if stray:
            more = f" and {len(stray) - 1} more" if len(stray) > 1 else ""
            raise BenchmarkError(
                f"{queries[stray[0]]}{more}: not listed in {csv_path} (add a row, with an empty reference_id if it has no copy)"
            )
        gt_path = root / "ground_truth.csv"
        if gt_path.is_file():
            gt = {q: r for _, q, r in _read_pairs(gt_path, allow_empty_reference=False)}
            if gt != truth:
                diff = sorted(set(gt.items()) ^ set(truth.items()))[0]
                raise BenchmarkError(f"{gt_path} disagrees with {csv_path} on query {diff[0]!r}")
        return cls(root, references, queries, truth, _ids(root, "background", required=False), sources)


def _ids(root: Path, folder: str, *, required: bool) -> dict[str, str]:
    """Id → path of the images in ``root/folder``; ids must be unique (``a.jpg`` and ``a.png`` are one id)."""
    path = root / folder
    if not path.is_dir():
        if not required:
            return {}
        others = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())
        seen = f" (it has {', '.join(others)})" if others else ""
        raise BenchmarkError(f"{root}: no {folder}/ folder{seen}; see `imsim eval run --help` for the layout")
    ids: dict[str, str] = {}
    for file in discover([path]).files:
        stem = Path(file).stem
        if stem in ids:
            raise BenchmarkError(f"{file}: id {stem!r} is also {ids[stem]} (ids are file names without extension)")
        ids[stem] = file
    if required and not ids:
        raise BenchmarkError(f"{path}: no images")
    return ids


def _read_pairs(csv_path: Path, *, allow_empty_reference: bool) -> list[tuple[int, str, str]]:
    """(line, query_id, reference_id) rows of a queries.csv or ground_truth.csv, checked for its columns."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"query_id", "reference_id"} - set(reader.fieldnames or [])
        if missing:
            raise BenchmarkError(
                f"{csv_path}: header needs the columns query_id,reference_id (missing {', '.join(sorted(missing))})"
            )
        rows = []
        for row in reader:
            query_id, reference_id = (row.get("query_id") or "").strip(), (row.get("reference_id") or "").strip()
            if not query_id:
                raise BenchmarkError(f"{csv_path}:{reader.line_num}: empty query_id")
            if not reference_id and not allow_empty_reference:
                raise BenchmarkError(f"{csv_path}:{reader.line_num}: empty reference_id")
            rows.append((reader.line_num, query_id, reference_id))
    if not rows and allow_empty_reference:
        raise BenchmarkError(f"{csv_path}: no queries")
    return rows


def _read_sources(csv_path: Path) -> dict[str, str]:
    """query id -> ``source`` (the original a query was made from), when queries.csv has that column."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "source" not in (reader.fieldnames or []):
            return {}
        return {(row.get("query_id") or "").strip(): (row.get("source") or "").strip() for row in reader}


def _id(prefix: str, index: int) -> str:
    return f"{prefix}{index:06d}"


def _save(image: Image.Image, path: Path, rng: random.Random) -> None:
    """Queries are saved as JPEG (quality drawn from the rng) like images found in the wild."""
    image.convert("RGB").save(path, "JPEG", quality=rng.randint(70, 95))


def build_copydetect(
    refs: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    queries: int = 200,
    negatives: int = 100,
    references: int = 0,
    distractors: str | os.PathLike[str] | None = None,
    background: int = 0,
    max_edits: int = 3,
    seed: int = 0,
    prefer_augly: bool = True,
    max_side: int = 1024,
) -> dict:
    """Write the benchmark; returns its manifest. ``references`` caps the reference set (0: every image left)."""
    pool = discover([refs]).files
    if not pool:
        raise ImsimError(f"no images found in {refs}")
    rng = random.Random(seed)
    order = sorted(pool)
    rng.shuffle(order)
    held_out, rest = order[:negatives], order[negatives:]
    bg, rest = rest[:background], rest[background:]
    refs_list = rest[:references] if references else rest
    if len(refs_list) < queries:
        raise ImsimError(
            f"{refs} has {len(pool)} images: too few for {queries} queries with a copy, {negatives} without "
            f"and {background} background images (each query needs its own reference)"
        )
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise ImsimError(f"{root} exists and is not empty; choose a new --out")
    for sub in ("references", "queries", "background"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    ref_ids: dict[str, str] = {}
    for i, path in enumerate(refs_list):
        ref_ids[path] = _id("R", i)
        shutil.copyfile(path, root / "references" / (ref_ids[path] + Path(path).suffix.lower()))
    n_distractors = 0
    if distractors:
        for path in discover([distractors]).files:
            shutil.copyfile(path, root / "references" / (_id("D", n_distractors) + Path(path).suffix.lower()))
            n_distractors += 1
    for i, path in enumerate(bg):
        shutil.copyfile(path, root / "background" / (_id("B", i) + Path(path).suffix.lower()))

    sources = [(p, ref_ids[p]) for p in rng.sample(refs_list, queries)] + [(p, "") for p in held_out]
    rng.shuffle(sources)
    rows = []
    for i, (path, ref_id) in enumerate(sources):
        query_rng = random.Random(f"{seed}:{i}")  # one stream per query: the set does not shift if an edit changes
        image = load_image(path, min_size=max_side).image
        if max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        edited, done = edit_ops.random_edit(image, query_rng, max_edits=max_edits, prefer_augly=prefer_augly)
        qid = _id("Q", i)
        _save(edited, root / "queries" / f"{qid}.jpg", query_rng)
        rows.append({"query_id": qid, "reference_id": ref_id, "edits": "; ".join(done), "source": os.path.basename(path)})

    _write_truth(root, rows)
    manifest = {
        "kind": "copydetect",
        "seed": seed,
        "source": os.path.abspath(refs),
        "pool": len(pool),
        "references": len(refs_list),
        "distractors": n_distractors,
        "queries_with_copy": queries,
        "queries_without_copy": len(held_out),
        "background": len(bg),
        "max_edits": max_edits,
        "edit_backend": edit_ops.backend(prefer_augly),
        "augly": _augly_version(prefer_augly),
        "source_digest": _digest(pool),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_truth(root: Path, rows: list[dict[str, str]]) -> None:
    """queries.csv (every query: its reference, edits and source) and ground_truth.csv (DISC21's two columns)."""
    with open(root / "queries.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["query_id", "reference_id", "edits", "source"])
        writer.writeheader()
        writer.writerows(rows)
    with open(root / "ground_truth.csv", "w", newline="") as fh:
        truth_writer = csv.writer(fh)
        truth_writer.writerow(["query_id", "reference_id"])
        truth_writer.writerows([r["query_id"], r["reference_id"]] for r in rows if r["reference_id"])


def _augly_version(prefer_augly: bool) -> str:
    if edit_ops.backend(prefer_augly) != "augly":
        return ""
    from importlib.metadata import version

    return version("augly")


def _digest(paths: list[str]) -> str:
    """Names and sizes of the source images: two builds from the same folder share it."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(f"{os.path.basename(p)}:{os.path.getsize(p)}\n".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Groups:
    """Images that belong together (``path,group`` CSV), e.g. one country's flag in several renditions."""

    members: dict[str, str]  # path -> group

    @classmethod
    def load(cls, csv_path: str | os.PathLike[str]) -> Groups:
        base = Path(csv_path).resolve().parent
        members = {}
        with open(csv_path, newline="") as fh:
            for row in csv.DictReader(fh):
                if "path" not in row or "group" not in row:
                    raise ImsimError(f"{csv_path}: needs the columns path,group")
                path = Path(row["path"]).expanduser()
                members[str(path if path.is_absolute() else (base / path).resolve())] = row["group"]
        if not members:
            raise ImsimError(f"{csv_path}: no rows")
        return cls(members)

    def as_dict(self) -> dict:
        return asdict(self)
