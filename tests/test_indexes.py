"""The index a new collection gets: auto's choice by rows and memory, and each kind's build and search parameters."""

from __future__ import annotations

import math

import pytest

from imsim.errors import ConfigError
from imsim.settings import load
from imsim.store import indexes


def settings(**values):
    return load({"env_file": "/dev/null", **values})


@pytest.mark.parametrize("rows", [10_000, 1_000_000, 3_000_000, 10_000_000, 30_000_000, 100_000_000, 1_000_000_000])
@pytest.mark.parametrize("dim", [256, 512, 768, 1024])
@pytest.mark.parametrize("memory_gb", [4.0, 16.0, 64.0])
def test_auto_takes_the_first_accurate_kind_that_fits(rows, dim, memory_gb):
    chosen = indexes.KINDS[indexes.choose(rows, dim, memory_gb)]
    assert chosen.recall_at_10 >= indexes.AUTO_MIN_RECALL and chosen.name != "FLAT" and not chosen.disk
    candidates = [k for k in indexes.KINDS.values() if k.name != "FLAT" and k.recall_at_10 >= indexes.AUTO_MIN_RECALL]
    candidates = [k for k in candidates if not k.disk and k.measured]
    fitting = [k for k in candidates if k.memory_bytes(rows, dim) <= memory_gb * 2**30]
    if fitting:  # the most preferred that fits: none before it in the table fits
        assert chosen == fitting[0]
    else:  # nothing fits one node's budget: the smallest accurate kind (a cluster spreads it over query nodes)
        assert chosen.bytes_per_dim == min(k.bytes_per_dim for k in candidates)


def test_auto_moves_off_hnsw_as_the_collection_outgrows_the_budget():
    small, large = indexes.choose(1_000_000, 768, 16.0), indexes.choose(100_000_000, 768, 16.0)
    assert small == "HNSW"
    assert large != "HNSW" and indexes.KINDS[large].bytes_per_dim < indexes.KINDS["HNSW"].bytes_per_dim / 2
    assert indexes.choose(100_000_000, 768, 16.0, lite=True) == "HNSW"  # Lite builds its own HNSW whatever the size


def test_build_parameters_follow_the_expected_rows():
    config = settings(expected_rows=1_000_000)
    assert indexes.build("HNSW", 768, config) == ("HNSW", {"M": 16, "efConstruction": 200})
    kind, params = indexes.build("IVF_SQ8", 768, settings(expected_rows=100_000))
    assert kind == "IVF_SQ8" and params == {"nlist": 4 * 316}  # the collection fits one segment: 4·sqrt(rows)
    # Milvus indexes each segment on its own: the lists follow one full segment's rows (512 MB of 768-d float32:
    # 174,762 rows), however large the collection grows; a 256-d segment holds 3x the rows, so more lists
    full = 512 * 2**20 // (4 * 768)
    assert indexes.build("IVF_SQ8", 768, config)[1] == {"nlist": 4 * math.isqrt(full)} == {"nlist": 1672}
    assert indexes.build("IVF_SQ8", 768, settings(expected_rows=10**9))[1] == {"nlist": 1672}
    assert indexes.build("IVF_SQ8", 256, config)[1] == {"nlist": 4 * math.isqrt(512 * 2**20 // (4 * 256))}
    assert indexes.build("IVF_FLAT", 768, settings(expected_rows=10))[1] == {"nlist": 128}
    assert indexes.nlist(10**12) == 65_536
    for dim in (256, 512, 768, 1000):
        kind, params = indexes.build("IVF_PQ", dim, config)
        assert dim % params["m"] == 0 and params["nbits"] == 8
    assert indexes.build("SCANN", 768, config)[1] == {"nlist": 1672}  # a Python bool reaches knowhere as "True": refused
    assert indexes.build("auto", 768, config)[0] == indexes.choose(1_000_000, 768, config.index_memory_gb)
    assert indexes.build("auto", 768, settings(expected_rows=100_000_000, index_memory_gb=16))[0] != "HNSW"


def test_search_parameters_suit_the_kind():
    config = settings()
    assert indexes.search_params("HNSW", {}, 10, config) == {"ef": 128}
    assert indexes.search_params("HNSW", {}, 500, config) == {"ef": 500}  # ef below k would cut the answer
    assert indexes.search_params("IVF_SQ8", {"nlist": "4000"}, 10, config) == {"nprobe": 125}  # a server says "4000"
    assert indexes.search_params("IVF_FLAT", {"nlist": 128}, 10, config) == {"nprobe": 16}
    assert indexes.search_params("IVF_FLAT", {"nlist": 128}, 10, settings(ivf_nprobe=200)) == {"nprobe": 128}
    assert indexes.search_params("SCANN", {"nlist": 1024}, 10, config) == {"nprobe": 32, "reorder_k": 100}
    assert indexes.search_params("DISKANN", {}, 300, config) == {"search_list": 300}
    assert indexes.search_params("FLAT", {}, 10, config) == {}


def test_the_settings_name_each_kind_and_refuse_others():
    assert settings(index_type="IVF_SQ8").index_type == "IVF_SQ8"
    with pytest.raises(ConfigError, match="IMSIM_INDEX_"):
        settings(index_type="IVF_SQ9")
    with pytest.raises(ConfigError, match="IMSIM_INDEX_"):
        settings(index_memory_gb=0)
