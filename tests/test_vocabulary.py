"""One vocabulary through every door: each request field is declared once (:mod:`imsim.vocabulary`) and the CLI's
options, the HTTP API's parameters (read from the OpenAPI document the API serves) and the vocabulary's fields name the
same things. A name that exists in one door only fails here, unless it is listed below as that door's own, with why."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer

from imsim.cli import app as cli_app
from imsim.vocabulary import ClusterRequest, DuplicatesOptions, IngestOptions, IngestRequest, SearchOptions, check

from .support.servers import ROOT

OPENAPI = ROOT / "docs" / "openapi.json"

# what one door has and the others need not, by request
LOCAL_FILE, OUTPUT = "a file on the caller's machine", "how the answer is printed"
CLI_ONLY = {
    "search": {"query": "the query image path (the API: the upload)", "html_out": LOCAL_FILE, "png_out": LOCAL_FILE},
    "duplicates": {"calibration": LOCAL_FILE, "csv_out": LOCAL_FILE, "json_out": LOCAL_FILE},
    "ingest": {
        "paths": "the positional inputs",
        "from_file": LOCAL_FILE,
        "expand": "how a path list is read",
        "local": "in this process",
        "wait": "follows progress",
        "activate": "after the job",
    },
}
CLI_ONLY["clusters"] = {"show": "reads a kept one", "listed": "lists them", "remove": "forgets one", "html_out": LOCAL_FILE}
for own in CLI_ONLY.values():
    own["as_json"] = OUTPUT
API_ONLY = {
    "search": {"image": "the upload (the CLI: a path)"},
    "duplicates": {"offset": "paging (the CLI prints every group)", "limit": "paging", "refresh": "the server's cache"},
    "ingest": set(),
}


def cli_params(command: str) -> dict[str, Any]:
    click = typer.main.get_command(cli_app)
    return {p.name: p for p in click.commands[command].params}  # type: ignore[attr-defined]


def api_params(path: str, method: str) -> set[str]:
    operation = json.loads(OPENAPI.read_text())["paths"][path][method]
    names = {p["name"] for p in operation.get("parameters", [])}
    body = operation.get("requestBody", {}).get("content", {})
    schemas = json.loads(OPENAPI.read_text())["components"]["schemas"]
    for content in body.values():
        ref = content["schema"].get("$ref", "")
        names |= set(schemas[ref.rsplit("/", 1)[-1]]["properties"]) if ref else set()
    return names


def test_search_fields_exist_at_every_door_and_nowhere_else():
    fields = set(SearchOptions.model_fields) | {"text", "like"}
    cli = set(cli_params("search")) - set(CLI_ONLY["search"])
    assert cli == fields, cli ^ fields
    for path, method, own in (
        ("/v1/search/image", "post", {"image"}),
        ("/v1/search/text", "get", {"text"}),
        ("/v1/search/like", "get", {"like"}),
    ):
        api = api_params(path, method) - set(API_ONLY["search"])
        assert api == set(SearchOptions.model_fields) | own - {"image"}, (path, api ^ set(SearchOptions.model_fields))


def test_duplicates_and_ingest_fields_exist_at_every_door():
    fields = set(DuplicatesOptions.model_fields)
    assert set(cli_params("duplicates")) - set(CLI_ONLY["duplicates"]) == fields - {"offset", "limit"}
    assert api_params("/v1/duplicates", "get") - {"refresh"} == fields
    ingest = set(IngestOptions.model_fields)
    assert set(cli_params("ingest")) - set(CLI_ONLY["ingest"]) == ingest
    assert api_params("/v1/jobs", "post") == set(IngestRequest.model_fields) == ingest | {"paths"}


def test_the_clusters_command_takes_the_cluster_request_field_by_field():
    assert set(cli_params("clusters")) - set(CLI_ONLY["clusters"]) == set(ClusterRequest.model_fields)


@pytest.mark.parametrize(
    ("command", "model"),
    [("search", SearchOptions), ("duplicates", DuplicatesOptions), ("ingest", IngestOptions), ("clusters", ClusterRequest)],
)
def test_a_shared_options_help_is_its_fields_description(command, model):
    """The help is declared once, on the field: the CLI shows the words the API's schema shows."""
    for name, param in cli_params(command).items():
        if name in model.model_fields:
            described = model.model_fields[name].description
            assert described and param.help.startswith(described), (command, name)


def test_a_date_is_a_date_at_every_door_and_a_bad_value_names_its_field():
    iso = check(SearchOptions, {"after": "2026-12-01"}).after
    assert iso == check(SearchOptions, {"after": str(iso)}).after == check(SearchOptions, {"after": iso}).after
    for values, words in (
        ({"after": "yesterday"}, "after: not a date"),
        ({"after": "nan"}, "after: not a date"),
        ({"k": 0}, "k: Input should be greater than or equal to 1"),
        ({"fusion": "median"}, "fusion:"),
        ({"tag": ["novalue"]}, "tag: "),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ):
        with pytest.raises(Exception, match=words):
            check(SearchOptions, values)
    assert check(SearchOptions, {"models": "clip, dinov2"}).models == ["clip", "dinov2"]
    assert check(SearchOptions, {"models": ["clip,dinov2"]}).models == ["clip", "dinov2"]


def test_the_contract_in_the_repo_is_the_one_the_code_serves_with_a_response_schema_for_every_route():
    """docs/openapi.json is reviewed like code (as immich keeps its OpenAPI document): a change to a route, a field or
    an answer fails here until the document is regenerated (`imsim serve --openapi > docs/openapi.json`) and the diff
    is read. The running server serves this same document (tests/test_api.py)."""
    from imsim.api.app import contract

    kept = json.loads(OPENAPI.read_text())
    assert kept == json.loads(json.dumps(contract())), "the API changed: run `imsim serve --openapi > docs/openapi.json`"
    for path, operations in kept["paths"].items():
        for method, operation in operations.items():
            ok = operation["responses"]["200"]
            assert ok.get("content"), (method, path)  # every answer declared: a schema, or a media type for bytes
            for media, content in ok["content"].items():
                assert media != "application/json" or content.get("schema"), (method, path)
            if path.startswith("/v1"):
                errors = {code for code in operation["responses"] if code != "200"}
                assert {"401", "422"} <= errors, (method, path)  # guarded, and a bad value is a one-line 422
