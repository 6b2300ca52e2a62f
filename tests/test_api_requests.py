"""The API's request handling without a store or a loaded model: the app served by uvicorn on a thread of the test (an
in-process ASGI transport never ends a request the timeout cancels, as uvicorn does), asked with httpx. A request that
runs past IMSIM_API_TIMEOUT answers 504 and its queued image query is dropped unembedded; a body is refused on its
declared length or as it streams in; the vocabulary's 422s name their field. (tests/test_api.py attacks a running
`imsim serve` with the same and more.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from imsim.api.app import create_app
from imsim.api.service import Service

from .support.servers import SAMPLES, free_port


@contextmanager
def served(service: Service) -> Iterator[httpx.Client]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture()
def service(settings):
    served = Service(settings.replace(api_timeout=0.5, api_max_upload_mb=1))
    yield served
    served.close()


def test_a_request_past_the_timeout_answers_504_and_its_image_query_is_dropped_unembedded(service):
    queued = []
    original = service.search_image

    def keep(*args, **kwargs):  # what the route queued, to look at once it gave up
        future = original(*args, **kwargs)
        queued.append(future)
        return future

    service.search_image = keep
    with served(service) as http:
        photo = (SAMPLES / "photos" / "chelsea.jpg").read_bytes()
        answer = http.post("/v1/search/image", files={"image": ("q.jpg", photo)}, data={"k": "3"})
    assert answer.status_code == 504 and answer.json()["kind"] == "timeout"
    (future,) = queued
    assert future.cancelled()  # the batcher was not running: the query waited, and the request's end cancelled it
    embedded = []
    service._search_many = lambda images, options: embedded.append(images)
    batcher = threading.Thread(target=service._run_batches)
    batcher.start()
    service.close()  # the batcher takes what is queued, then the end
    batcher.join(10)
    assert not batcher.is_alive() and embedded == []  # the given-up query never reached a model


def test_bodies_over_the_limit_and_values_a_field_cannot_hold_are_refused_naming_what(service):
    with served(service) as http:
        big = b"\xff" * (3 * 2**20)
        declared = http.post("/v1/search/image", files={"image": ("big.jpg", big)})
        assert declared.status_code == 413 and declared.json()["kind"] == "too_large"

        def stream():  # no Content-Length: counted as it arrives
            yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="b.jpg"\r\n\r\n'
            for _ in range(64):
                yield b"\xff" * 2**20

        streamed = http.post("/v1/search/image", content=stream(), headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert streamed.status_code == 413 and "over" in streamed.json()["error"]
        for path, params, words in (
            ("/v1/duplicates", {"threshold": "nan"}, "threshold:"),
            ("/v1/duplicates", {"threshold": "1.5"}, "threshold: Input should be less than or equal to 1"),
            ("/v1/duplicates", {"precision": "0.8"}, "precision:"),
            ("/v1/search/text", {"text": "cat", "after": "yesterday"}, "after: not a date"),
            ("/v1/search/text", {"text": "cat", "under": "/a\x00b"}, "NUL"),
            ("/v1/search/text", {"text": "cat", "colour": "red"}, "colour: Extra inputs are not permitted"),
            ("/v1/search/like", {"like": "x", "k": "5000"}, "k: at most 1000 results a page"),
        ):
            answer = http.get(path, params=params)
            assert answer.status_code == 422 and words in answer.json()["error"], (params, answer.text)
        bad_tags = http.post("/v1/jobs", json={"paths": ["/x"], "tags": "notadict"})
        assert bad_tags.status_code == 422 and bad_tags.json()["error"].startswith("tags:")
