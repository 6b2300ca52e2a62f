"""Duplicates, against real servers (the integration tier of test_duplicates.py)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from imsim import calibration
from imsim.store import VectorStore
from imsim.store.searching import Searching

from .support.servers import settings_env
from .support.settings import make_settings


def test_cli_exports_csv_and_json(cli, tiny_model_dirs, tmp_path, copies):
    folder, expected = copies
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    cli(env, "ingest", "--local", str(folder))
    out_csv, out_json = tmp_path / "dups.csv", tmp_path / "dups.json"
    proc = cli(env, "duplicates", "--model", "fused", "--threshold", "0.9999", "--csv", str(out_csv), "--json-out", str(out_json))
    assert "3 groups, 9 images" in proc.stderr and "threshold 0.9999 (given)" in proc.stderr
    rows = list(csv.DictReader(open(out_csv)))
    by_group: dict[str, list[str]] = {}
    for row in rows:
        by_group.setdefault(row["group"], []).append(row["path"])
        assert float(row["best_score"]) >= 0.9999
    assert sorted(sorted(g) for g in by_group.values()) == expected
    data = json.loads(out_json.read_text())
    assert data["model"] == "fused" and len(data["groups"]) == 3 and all(g["size"] == 3 for g in data["groups"])
    # nothing calibrated: a threshold is measured on the collection (once, kept in the store), used, and said
    proc = cli(env, "duplicates", "--json")
    assert "no threshold for dinov2 yet: measuring one on" in proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["threshold_source"].startswith("measured on this collection") and answer["model"] == "dinov2"
    again = cli(env, "duplicates", "--json")
    assert "measuring" not in again.stderr and json.loads(again.stdout)["threshold"] == answer["threshold"]


def test_eval_thresholds_apply_only_when_asked_and_a_bad_benchmark_exits_2(cli, tiny_model_dirs, tmp_path, copies):
    """`eval run` keeps thresholds in its output: `duplicates` uses them with --calibration FILE or after
    `imsim eval apply FILE`, never before. A benchmark folder that breaks the format exits 2 naming the folder."""
    folder, expected = copies
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    cli(env, "ingest", "--local", str(folder))
    version = json.loads(cli(env, "collections", "--json").stdout)
    dinov2 = next(c for c in version if c["model"] == "dinov2")["version"]
    out = tmp_path / "eval-out"
    out.mkdir()
    entry = {calibration.version_key("dinov2", dinov2): {"threshold_p90": 0.99, "threshold_p95": 0.9999, "benchmark": "b"}}
    (out / "calibration.json").write_text(json.dumps(entry))
    assert "(calibrated" not in cli(env, "duplicates").stderr  # not applied yet: a threshold measured on the collection
    proc = cli(env, "duplicates", "--calibration", str(out / "calibration.json"), "--json")
    assert sorted(sorted(m["path"] for m in g["members"]) for g in json.loads(proc.stdout)["groups"]) == expected
    assert not (tmp_path / "data" / "calibration.json").exists()
    cli(env, "eval", "apply", str(out / "calibration.json"))
    proc = cli(env, "duplicates")
    assert "threshold 0.9999 (calibrated" in proc.stderr and f"{len(expected)} groups" in proc.stderr
    # a later run whose links never reached the precision (null thresholds) applies nothing and loses nothing
    unreached = {k: {**v, "threshold_p90": None, "threshold_p95": None} for k, v in entry.items()}
    (out / "calibration.json").write_text(json.dumps(unreached))
    proc = cli(env, "eval", "apply", str(out / "calibration.json"))
    assert "nothing applied" in proc.stderr and "skipped dinov2@" in proc.stderr, proc.stderr
    assert "threshold 0.9999 (calibrated" in cli(env, "duplicates").stderr
    for broken in ("[1, 2]", '{"dinov2@x": {"threshold_p95": "high"}}', "{not json"):
        (out / "calibration.json").write_text(broken)
        proc = cli(env, "eval", "apply", str(out / "calibration.json"), check=False)
        assert proc.returncode == 2 and f"cannot read calibration {out / 'calibration.json'}" in proc.stderr, proc.stderr
    assert "threshold 0.9999 (calibrated" in cli(env, "duplicates").stderr
    bad = tmp_path / "bench"
    (bad / "refs").mkdir(parents=True)
    (bad / "queries.csv").write_text("query_id,reference_id\n")
    proc = cli(env, "eval", "run", "--bench", str(bad), "--out", str(tmp_path / "never"), check=False)
    assert proc.returncode == 2 and str(bad) in proc.stderr and "no references/ folder" in proc.stderr, proc.stderr
    assert not (tmp_path / "never").exists()  # nothing ingested, no output written


def test_the_review_from_the_shell_keeps_resolves_marks_undoes_and_exports(cli, tiny_model_dirs, tmp_path, copies):
    """`imsim review`: the page's actions from the shell, on ids or paths. A resolved group leaves the open groups
    (shown with --show decided), an undo reopens it, a pair marked "not a duplicate" leaves every group, and the export
    streams every decision."""
    folder, expected = copies
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    cli(env, "ingest", "--local", str(folder))

    def groups(*extra: str) -> list[tuple[list[str], bool]]:
        answer = json.loads(cli(env, "duplicates", "--model", "dinov2", "--threshold", "0.9999", "--json", *extra).stdout)
        return sorted((sorted(m["path"] for m in g["members"]), g["decided"]) for g in answer["groups"])

    assert groups() == [(g, False) for g in expected]
    first, second = expected[0], expected[1]
    kept = cli(env, "review", "keep", *first)
    assert f"kept {first[0]}; 2 recorded as its duplicates" in kept.stderr
    assert groups("--show", "all") == sorted([(first, True)] + [(g, False) for g in expected[1:]])  # open: the others
    exported = list(csv.DictReader(io.StringIO(cli(env, "review", "export").stdout)))
    assert sorted(r["path"] for r in exported) == first and {r["keeper_path"] for r in exported} == {first[0]}
    assert "reopened: 3 decisions forgotten" in cli(env, "review", "undo", first[0]).stderr
    cli(env, "review", "not-duplicate", second[0], second[1])
    after = groups()  # the first group open again; the marked pair linked no more (its third image may hold it)
    assert (first, False) in after and all(not {second[0], second[1]} <= set(g) or len(g) > 2 for g, _ in after)
    missing = cli(env, "review", "keep", str(folder / "nope.jpg"), first[0], check=False)
    assert missing.returncode == 2 and "no stored image" in missing.stderr
    same = cli(env, "review", "not-duplicate", first[0], first[0], check=False)
    assert same.returncode == 2 and "the same image" in same.stderr


class CountingSearches(Searching):
    """The real search part, counting the searches `imsim duplicates` makes and at which consistency."""

    def __init__(self, *args):
        super().__init__(*args)
        self.searches: list[tuple[int, str]] = []  # (query vectors, consistency)

    def search(self, name, vectors, k, **kwargs):
        self.searches.append((len(vectors), kwargs.get("consistency", "Strong")))
        return super().search(name, vectors, k, **kwargs)


class CountingStore(VectorStore):
    """The real store, its search part counting."""

    def __init__(self, settings):
        super().__init__(settings)
        self.searching = self.counted = CountingSearches(self.connection, self.versions, self.rows)


def _clustered(count: int, dim: int, seed: int):
    """Rows in tight clusters of 3 (near-duplicates) among unrelated ones, as imsim stores them."""
    import numpy as np

    from .support.rows import row

    rng = np.random.default_rng(seed)
    base = rng.normal(size=(count, dim)).astype(np.float32)
    base[1::3] = base[0::3][: len(base[1::3])] + 0.02 * rng.normal(size=base[1::3].shape)  # a copy of its neighbour
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    return [row(f"{i:032x}", f"/corpus/{i}.jpg", v) for i, v in enumerate(base)], base


def _brute_force_edges(vectors, neighbours, threshold):
    import numpy as np

    scores = vectors @ vectors.T
    edges = set()
    for i, row in enumerate(scores):
        order = [j for j in np.argsort(-row)[: neighbours + 1] if j != i]
        edges |= {(min(i, j), max(i, j)) for j in order[:neighbours] if row[j] >= threshold}
    return edges


@pytest.mark.parametrize("backend", ["lite", pytest.param("server", marks=pytest.mark.integration)])
def test_the_knn_graph_is_built_in_this_process_and_equals_brute_force(backend, tiny_model_dirs, tmp_path, models, request):
    """On a server and on Milvus Lite alike: no server search at all (one search per 1,024 rows was 263 rows/s on the
    server; on Lite each walks every row in Python): the collection is read once and the graph built in this process,
    equal to brute force."""
    from imsim.duplicates import neighbour_edges

    uri = request.getfixturevalue("milvus_server_uri") if backend == "server" else ""
    settings = make_settings(tiny_model_dirs, tmp_path / "data", **({"milvus_uri": uri} if uri else {}))
    store = CountingStore(settings)
    name = store.versions.ensure_collection(models["clip"].info)
    rows, vectors = _clustered(2500, models["clip"].info.dim, seed=4)
    store.rows.upsert(name, rows, batch=1000)
    store.rows.flush(name)
    paths, edges = neighbour_edges(store, {"clip": name}, 0.9, neighbours=4)
    want = _brute_force_edges(vectors, 4, 0.9)
    got = {(int(a, 16), int(b, 16)) for a, b, _ in edges}
    assert len(want) > 800 and got == want
    assert set(paths) == {f"{i:032x}" for pair in want for i in pair}  # only the images in an edge are kept
    assert store.counted.searches == []
    store.close()
