"""Reviewing duplicates: a threshold measured on the collection itself when none was calibrated, each group's members
with what a person decides by (resolution, file size, dates, path, tags), a suggested keeper, and the decisions.

**A threshold measured on your own images.** With no threshold given, calibrated or defaulted for a model version
(:func:`imsim.duplicates.resolve_threshold`), `imsim duplicates` and the review page do not stop at an error: they
measure one, once per version, and keep it in the store (an artifact: every process reads the same one). A sample of
the stored images (:data:`SAMPLE`, spread over the collection by id order, ids being hashes) is edited as copies are
edited (a crop of 10-25 %, a downscale, a JPEG re-encode at quality 35-70, seeded by the image), each copy embedded
and searched: its similarity to its own original is a true pair, its similarity to the best *other* stored image a
false one (another copy of the original, the same file or an image nearer the original than its edited copy is,
excepted: that is a true duplicate, counted neither way). The threshold is the operating point of
those pairs at 95 % (90 %) precision chosen as ISC2021 chooses it: the highest recall keeping the precision, at its
highest score. Where no threshold reaches it (random weights do that), the point of best precision keeping half the
copies is taken, and its source says so with the precision it measured. It is an estimate from edits imsim makes;
`imsim eval run` on a benchmark of your own measures with more care, and an applied calibration takes precedence.

**Keepers and decisions.** A group's suggested keeper follows a rule (largest pixels, then bytes; or the oldest, the
newest, the smallest); resolving a group records the keeper and the others as rows (:mod:`imsim.store.decisions`),
never touching a file; a resolved group leaves the open list and can be undone; decisions export as CSV or JSON.
"""

from __future__ import annotations

import csv
import io
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import duplicates
from .errors import ImsimError

if TYPE_CHECKING:
    from .client.local import Client
    from .store import VectorStore
    from .store.decisions import Decision
    from .vocabulary import Group

SAMPLE = 120  # stored images edited and searched to measure a threshold
KEEP_RULES = ("largest", "oldest", "newest", "smallest")
EXPORT_FIELDS = ["path", "decision", "keeper_path", "id", "keeper", "sha256", "decided_at"]


# --- a threshold measured on the collection ---------------------------------------------------------------------
def edited_copy(data: bytes, seed: str) -> bytes:
    """A copy of an image as people make them: cropped 10-25 %, downscaled, re-encoded as JPEG (seeded by ``seed``)."""
    from PIL import Image

    rng = random.Random(seed)
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    keep = rng.uniform(0.75, 0.9)
    w, h = max(8, int(width * keep)), max(8, int(height * keep))
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    image = image.crop((left, top, left + w, top + h))
    scale = rng.uniform(0.5, 0.8)
    image = image.resize((max(8, int(w * scale)), max(8, int(h * scale))))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=rng.randint(35, 70))
    return out.getvalue()


def operating_point(scored: Sequence[tuple[float, bool]], precision: float) -> tuple[float, float, float] | None:
    """(threshold, precision, recall) of the pairs at ``precision`` as ISC2021 chooses it (the highest recall keeping
    the precision, at its highest score), or None when no threshold reaches it."""
    positives = sum(1 for _, true in scored if true)
    if not positives:
        return None
    best: tuple[float, float, float] | None = None
    found = 0
    ordered = sorted(scored, key=lambda p: (-p[0], p[1]))  # equal scores: the false ones first, the worst case
    for n, (score, true) in enumerate(ordered, 1):
        found += true
        if n < len(ordered) and ordered[n][0] == score:
            continue  # a threshold takes every pair of its score
        if found / n >= precision and (best is None or found / positives > best[2]):
            best = (score, found / n, found / positives)
    return best


def best_precision(scored: Sequence[tuple[float, bool]], recall: float = 0.5) -> tuple[float, float, float]:
    """The operating point of best precision that keeps ``recall`` of the true pairs (the fallback)."""
    positives = max(1, sum(1 for _, true in scored if true))
    ordered = sorted(scored, key=lambda p: (-p[0], p[1]))
    found, best = 0, (ordered[-1][0], 0.0, 1.0)
    for n, (score, true) in enumerate(ordered, 1):
        found += true
        if n < len(ordered) and ordered[n][0] == score:
            continue  # a threshold takes every pair of its score
        if found / positives >= recall and found / n > best[1]:
            best = (score, found / n, found / positives)
    return best


def measure_pairs(client: Client, model: str, sample: int = SAMPLE) -> list[tuple[float, bool]]:
    """(similarity, true pair) for edited copies of ``sample`` stored images (see the module doc)."""
    from .images import open_image

    collection = client.models.collection(model)
    chosen: list[tuple[str, str, str]] = []
    for rows in client.store.rows.iter_rows(collection, "", output_fields=["path", "sha256"], batch=sample):
        chosen += [(r["id"], r["path"], r["sha256"]) for r in rows]
        if len(chosen) >= sample:
            break
    copies, originals = [], []
    for row_id, path, sha in chosen[:sample]:
        try:
            image = open_image(path)
        except ImsimError:
            continue  # moved or unreadable since it was stored: measured without it
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        copies.append(edited_copy(buffer.getvalue(), row_id))
        originals.append((row_id, sha))
    if len(originals) < 2:
        raise duplicates.NoThreshold(f"too few readable stored images for {model} to measure a threshold on")
    vectors = client.models.embed_many(copies, [model])[model]
    stored = client.store.rows.get_vectors(collection, [i for i, _ in originals], consistency="Bounded")
    hits = client.search_batch({model: vectors}, k=4, fusion="none")
    others = sorted({h.id for row in hits for h in row})
    shas = client.store.rows.get(collection, others, ["sha256"], "Bounded")
    theirs = client.store.rows.get_vectors(collection, others, consistency="Bounded")
    scored: list[tuple[float, bool]] = []
    for (row_id, sha), vector, row in zip(originals, vectors, hits, strict=True):
        if row_id not in stored:
            continue
        true = float(np.dot(vector, stored[row_id]))
        scored.append((true, True))

        # another copy of the original (the same file, or an image nearer the original than its edited copy is: a
        # lossless re-save, a resize) is a true duplicate: counted neither way
        copies_of = {h.id for h in row if shas.get(h.id, {}).get("sha256") == sha}
        copies_of |= {h.id for h in row if h.id in theirs and float(np.dot(theirs[h.id], stored[row_id])) >= true}
        other = next((h for h in row if h.id != row_id and h.id not in copies_of), None)
        if other is not None:
            scored.append((other.score, False))
    return scored


def measure_threshold(client: Client, model: str, on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure ``model``'s thresholds on its collection and keep them in the store; returns what was kept."""
    from .store.artifacts import Artifacts

    collection = client.models.collection(model)
    if on_progress is not None:
        on_progress(f"no threshold for {model} yet: measuring one on {SAMPLE} of your images (once; kept in the store)")
    started = time.perf_counter()
    scored = measure_pairs(client, model)
    copies = sum(1 for _, true in scored if true)
    record: dict[str, Any] = {"model": model, "collection": collection, "copies": copies, "pairs": len(scored)}
    for precision in (0.9, 0.95):
        point = operating_point(scored, precision)
        name = f"p{round(precision * 100)}"
        if point is None:
            value, reached, recall = best_precision(scored)
            record[name] = {"threshold": value, "precision": reached, "recall": recall, "reached": False}
        else:
            record[name] = {"threshold": point[0], "precision": point[1], "recall": point[2], "reached": True}
    record["measured_at"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    record["seconds"] = round(time.perf_counter() - started, 1)
    Artifacts(client.store).put(duplicates.measured_name(collection), "threshold", b"", record)
    return record


def ensure_threshold(
    client: Client, model: str, precision: float = 0.95, on_progress: Callable[[str], None] | None = None
) -> duplicates.Threshold | None:
    """The threshold `imsim duplicates` would use, measured on the collection first when there is none (None when
    the model has stored nothing yet: :func:`imsim.duplicates.link` says so)."""
    names = client.settings.model_names if model == "fused" else [model]
    existing = set(client.store.versions.collections())
    if any(client.models.collection(n) not in existing for n in names):
        return None
    try:
        return duplicates.resolve_threshold(client, model, None, precision)
    except duplicates.NoThreshold:
        if model == "fused":
            raise
    measure_threshold(client, model, on_progress)
    return duplicates.resolve_threshold(client, model, None, precision)


# --- members, keepers and decisions -----------------------------------------------------------------------------
MEMBER_FIELDS = ["path", "width", "height", "file_size", "mtime", "ingested_at", "sha256", "tags"]


def member_facts(client: Client, model: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What the store says of each member (one bounded read for a page of groups)."""
    name = client.settings.model_names[0] if model == "fused" else model
    return client.store.rows.get(client.models.collection(name), sorted(set(ids)), MEMBER_FIELDS, "Bounded")


def suggest_keeper(members: Sequence[str], facts: dict[str, dict[str, Any]], rule: str = "largest") -> str:
    """The member a person would most likely keep, by ``rule`` (:data:`KEEP_RULES`); ties by the shorter path."""
    if rule not in KEEP_RULES:
        raise ImsimError(f"unknown keeper rule {rule!r}; use one of {', '.join(KEEP_RULES)}")

    def of(i: str, field: str) -> float:
        return float(facts.get(i, {}).get(field) or 0)

    def key(i: str) -> tuple[float, float, int, str]:
        pixels, size, mtime = of(i, "width") * of(i, "height"), of(i, "file_size"), of(i, "mtime")
        first = {"largest": (-pixels, -size), "smallest": (pixels, size), "oldest": (mtime, -pixels)}.get(rule, (-mtime, -pixels))
        path = str(facts.get(i, {}).get("path", ""))
        return first[0], first[1], len(path), path

    return min(members, key=key)


def resolve(store: VectorStore, keeper: str, members: Sequence[str], facts: dict[str, dict[str, Any]]) -> list[Decision]:
    """Record a group resolved with ``keeper`` kept (every member must be stored: ``facts`` holds them)."""
    from .errors import NotFound
    from .store.decisions import Decisions

    if keeper not in members:
        raise ImsimError("the keeper must be one of the group's members")
    missing = [i for i in members if i not in facts]
    if missing:
        raise NotFound(f"no stored image {missing[0]}")

    def row(i: str) -> tuple[str, str, str]:
        return i, str(facts[i].get("path", "")), str(facts[i].get("sha256", ""))

    return Decisions(store).resolve(row(keeper), [row(i) for i in members if i != keeper])


def export(decisions: Iterable[Decision], form: str = "csv") -> Iterator[str]:
    """The decisions as CSV lines (a header first) or JSON lines, streamed."""
    if form == "json":
        for d in decisions:
            yield json.dumps({f: getattr(d, f) for f in EXPORT_FIELDS}) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    for n, d in enumerate(decisions):
        writer.writerow([getattr(d, f) for f in EXPORT_FIELDS])
        if n % 1000 == 999:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


class ReviewPage:
    """One page of groups as the review shows them: each group, its suggested keeper and whether it is decided, with
    the members' stored facts and decisions."""

    def __init__(self, total: int, groups: list[tuple[duplicates.Group, str, bool]], facts: dict[str, Any], decided: dict):
        self.total, self.groups, self.facts, self.decided = total, groups, facts, decided


def review_page(
    client: Client,
    linked: duplicates.Linked,
    hidden: Iterable[tuple[str, str]],
    *,
    show: str = "open",
    order: str = "size",
    keep: str = "largest",
    offset: int = 0,
    limit: int = 50,
) -> ReviewPage:
    """The groups of ``linked`` (pairs in ``hidden`` left out) that ``show`` asks for, ordered, one page of them."""
    from .store.decisions import Decisions

    groups = linked.groups(hidden)
    decisions = Decisions(client.store).among(i for g in groups for i, _ in g.members)

    def is_decided(group: duplicates.Group) -> bool:
        return all(i in decisions for i, _ in group.members)

    chosen = [g for g in groups if show == "all" or is_decided(g) == (show == "decided")]
    if order == "score":
        chosen.sort(key=lambda g: (-g.best, -len(g.members)))
    page = chosen[offset : offset + limit]
    facts = member_facts(client, linked.model, (i for g in page for i, _ in g.members))
    rows = [(g, suggest_keeper([i for i, _ in g.members], facts, keep), is_decided(g)) for g in page]
    return ReviewPage(len(chosen), rows, facts, decisions)


def to_group(
    group: duplicates.Group,
    suggested: str | None = None,
    decided: bool = False,
    facts: dict[str, dict[str, Any]] | None = None,
    decisions: dict[str, Decision] | None = None,
) -> Group:
    """A group as the vocabulary's (what the API answers and the CLI prints), members with their facts and decisions."""
    from .vocabulary import Group, Link, Member

    facts, decisions = facts or {}, decisions or {}
    members = []
    for row_id, path in group.members:
        known, decision = facts.get(row_id, {}), decisions.get(row_id)
        members.append(
            Member(
                id=row_id,
                path=path,
                width=known.get("width"),
                height=known.get("height"),
                file_size=known.get("file_size"),
                mtime=known.get("mtime"),
                ingested_at=known.get("ingested_at"),
                tags=known.get("tags") or {},
                decision=decision.decision if decision else None,
                keeper=decision.keeper if decision else None,
            )
        )
    edges = [Link(a=a, b=b, score=round(score, 4)) for a, b, score in group.edges]
    best = round(group.best, 4)
    return Group(size=len(members), best_score=best, members=members, edges=edges, suggested=suggested, decided=decided)
