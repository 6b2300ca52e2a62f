"""Images in S3 and S3-compatible object stores (MinIO, SeaweedFS, Ceph): ``s3://bucket/key`` as an image path.

Owns the URI form, the client, the paged listing and reading one object:

- **URIs** are kept as given (a key may hold spaces, ``%``, ``+``, any UTF-8): ``s3://bucket/key`` is the path
  stored in every row, so ids come from the URI and a file and an object never collide.
- **The client** takes credentials from the standard AWS places only (environment, ``~/.aws`` files, instance and
  pod roles: boto3's chain), the endpoint from ``IMSIM_S3_ENDPOINT`` (empty: AWS), never from a job record or a
  message; errors never quote a credential.
- **Listing** is paged (1,000 keys a request) and streamed: a prefix of millions of keys is never one list. Each
  object comes with its size, ETag and last-modified (:class:`Listed`), carried with the job's chunk, so a worker
  decides "stored unchanged" without a request per object and an unchanged prefix downloads nothing.
- **Reading** one object: the byte limit checked on its listed size, then a GET conditional on the listed ETag, so
  an object overwritten since it was listed fails alone ("changed since it was listed") and one deleted fails alone
  ("no such object"). The GET is a URL boto3 signs, fetched by urllib3 (:func:`get`); throttling and 5xx are retried
  with backoff (botocore's adaptive mode for LIST and HEAD; ``IMSIM_S3_MAX_ATTEMPTS`` for both); a store that stays
  unreachable raises :class:`~imsim.errors.SourceUnavailable`, which makes a worker retry the chunk later
  instead of failing its files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import (
    ImageDecodeError,
    ImageNotFound,
    ImageTooLarge,
    ImageUnreadable,
    ImsimError,
    PathNotAllowed,
    SourceUnavailable,
)
from ..settings import redact
from .files import FileBytes, FileStat
from .names import check_path, compile_glob, is_glob, is_image_name, is_uri

SCHEME = "s3://"
PAGE = 1000  # keys per LIST request (S3's maximum)
DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AllAccessDisabled"}


def split(uri: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``; the key may be empty (the bucket's root)."""
    rest = uri[len(SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ImsimError(f"{uri}: no bucket (write s3://BUCKET/PREFIX)")
    return bucket, key


def canonical(uri: str) -> str:
    """The one spelling of a URI that ids are made from: the scheme in lower case, bucket and key as given."""
    bucket, key = split(uri)
    return f"{SCHEME}{bucket}/{key}"


class Listed(str):
    """A URI as a listing gave it, carrying what the listing said: ``facts`` = (size, last-modified as Unix seconds,
    version ``etag:…``). A ``str``, so it goes wherever a path goes; a chunk carries the facts beside its paths."""

    facts: tuple[int, float, str]

    def __new__(cls, uri: str, facts: tuple[int, float, str]) -> Listed:
        made = super().__new__(cls, uri)
        made.facts = facts
        return made


@dataclass(frozen=True)
class S3Config:
    """How to reach the object store; credentials are boto3's to find (never a setting of imsim's)."""

    endpoint: str = ""
    region: str = ""
    addressing: str = "auto"  # "path" for most S3-compatible servers; "auto" picks it when an endpoint is set
    timeout: float = 30.0
    max_attempts: int = 8

    @classmethod
    def from_settings(cls, settings: Any) -> S3Config:
        return cls(
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            addressing=settings.s3_addressing,
            timeout=settings.s3_timeout,
            max_attempts=settings.s3_max_attempts,
        )

    def where(self) -> str:
        """The endpoint as messages show it: a password in it masked (``http://user:pass@host`` is allowed)."""
        return redact(self.endpoint) if self.endpoint else "AWS S3"


_clients: dict[S3Config, Any] = {}
_lock = threading.Lock()


def client(config: S3Config) -> Any:
    """One boto3 client per configuration and process (boto3 clients are thread-safe)."""
    with _lock:
        if config not in _clients:
            import boto3
            from botocore.config import Config

            style = config.addressing if config.addressing != "auto" else ("path" if config.endpoint else "virtual")
            session = boto3.session.Session()
            # a LIST page is 1,000 timestamps: parsed by the standard library instead of dateutil (a third of the
            # LIST's client CPU), falling back to botocore's parser for any form fromisoformat does not read
            session._session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
            _clients[config] = session.client(
                "s3",
                endpoint_url=config.endpoint or None,
                region_name=config.region or None,
                config=Config(
                    s3={"addressing_style": style},
                    retries={"max_attempts": config.max_attempts, "mode": "adaptive"},
                    connect_timeout=config.timeout,
                    read_timeout=config.timeout,
                    max_pool_connections=64,
                ),
            )
        return _clients[config]


def _timestamp(value: str) -> Any:
    from datetime import datetime, timezone

    try:
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        from botocore.utils import parse_timestamp

        return parse_timestamp(value)


def _error(uri: str, exc: BaseException, config: S3Config) -> ImsimError:
    """One line naming the URI and what the store said; never a credential."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in ("NoSuchKey", "404", "NotFound"):
            return ImageNotFound(uri, "no such object (deleted?)")
        if code == "NoSuchBucket":
            return ImsimError(f"{uri}: no such bucket at {config.where()}")
        if code in ("PreconditionFailed", "412"):
            return ImageUnreadable(uri, "the object changed since it was listed (its ETag differs); ingest it again")
        if code in DENIED or status == 403:
            return ImsimError(
                f"{uri}: access denied by {config.where()} ({code or status}): check the credentials "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and IMSIM_S3_ENDPOINT"
            )
        if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout", "ServiceUnavailable"):
            return SourceUnavailable(f"{uri}: {config.where()} answered {code or status} after retries")
        return ImageUnreadable(uri, f"{code or status}: {exc.response.get('Error', {}).get('Message', '')}".strip(": "))
    if isinstance(exc, NoCredentialsError):
        return ImsimError(f"{uri}: no S3 credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)")
    if isinstance(exc, BotoCoreError | OSError):
        return SourceUnavailable(f"{uri}: cannot reach {config.where()} ({type(exc).__name__})")
    return ImsimError(f"{uri}: {type(exc).__name__}")


# --- listing ------------------------------------------------------------------------------------
def facts_of(obj: dict[str, Any]) -> tuple[int, float, str]:
    return int(obj["Size"]), float(obj["LastModified"].timestamp()), "etag:" + str(obj["ETag"]).strip('"')


def iter_objects(uri: str, config: S3Config, skip: Any = None) -> Iterator[Listed]:
    """The image objects a URI names, page by page: a key with an image extension is that object; a prefix (with or
    without a trailing ``/``) is every image below it; a glob (``*`` within a "folder", ``**`` across) is matched on
    the URIs of the listing of its literal head. ``skip(reason)`` counts what was left out."""

    uri = canonical(uri)
    bucket, key = split(uri)
    probe(uri, config)
    s3 = client(config)
    pattern = None
    if is_glob(key):
        head = min((key.index(c) for c in "*?[" if c in key), default=len(key))
        prefix = key[:head]
        pattern = compile_glob(uri)
    elif key and not key.endswith("/") and is_image_name(key):
        try:
            head_obj = s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - named by _error
            error = _error(uri, exc, config)
            if isinstance(error, ImageNotFound):
                yield Listed(uri, (0, 0.0, ""))  # recorded as this file's failure by the worker, like a missing file
                return
            raise error from None
        yield Listed(uri, facts_of({**head_obj, "Size": head_obj["ContentLength"]}))
        return
    else:
        prefix = key if not key or key.endswith("/") else key + "/"
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": PAGE})
        for page in pages:
            for obj in page.get("Contents", ()):
                name = str(obj["Key"])
                if name.endswith("/"):
                    continue  # a "folder" marker object
                full = f"{SCHEME}{bucket}/{name}"
                if pattern is not None and not pattern.match(full):
                    continue
                if not is_image_name(name):
                    if skip is not None:
                        skip(f"not an image type ({_ext(name) or 'no extension'})")
                    continue
                yield Listed(full, facts_of(obj))
    except ImsimError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore's errors, named by _error
        raise _error(uri, exc, config) from None


def _ext(name: str) -> str:
    import os

    return os.path.splitext(name.rstrip())[1].lower()


# --- reading ------------------------------------------------------------------------------------
def allowed(uri: str, roots: tuple[str, ...]) -> bool:
    """Whether ``uri`` lies under one of the ``s3://`` entries of the allowed roots (none given: any object)."""
    if not roots:
        return True
    for root in roots:
        if is_uri(root):
            base = canonical(root).rstrip("/")
            if uri == base or uri.startswith(base + "/"):
                return True
    return False


class OpenedObject:
    """One object about to be read: :attr:`stat` from its listing (or one HEAD), :meth:`read` one conditional GET."""

    def __init__(self, uri: str, facts: tuple[int, float, str], limits: Any, config: S3Config):

        self.path, self._facts, self._limits, self._config = uri, facts, limits, config
        self.stat = FileStat(uri, facts[0], facts[1], facts[2])

    def __enter__(self) -> OpenedObject:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self) -> Any:

        uri, limits = self.path, self._limits
        if self._facts[0] > limits.max_bytes:
            raise ImageTooLarge(uri, f"{self._facts[0]:,} bytes exceeds the limit of {limits.max_bytes:,} (IMSIM_MAX_FILE_BYTES)")
        etag = self._facts[2][len("etag:") :]
        data, headers = get(uri, self._config, if_match=etag, max_bytes=limits.max_bytes)
        if not data:
            raise ImageDecodeError(uri, "empty file (0 bytes)")
        version = "etag:" + str(headers.get("ETag", "")).strip('"')
        mtime = self._facts[1]
        if modified := headers.get("Last-Modified"):
            from email.utils import parsedate_to_datetime

            try:
                mtime = parsedate_to_datetime(modified).timestamp()
            except (TypeError, ValueError):
                pass
        return FileBytes(uri, hashlib.sha256(data).hexdigest(), len(data), mtime, data=data, file_version=version)


# --- one GET ------------------------------------------------------------------------------------
RETRIED = {429, 500, 502, 503, 504}
_pools: dict[S3Config, Any] = {}


def _pool(config: S3Config) -> Any:
    with _lock:
        if config not in _pools:
            import urllib3

            _pools[config] = urllib3.PoolManager(
                maxsize=64, retries=False, timeout=urllib3.Timeout(connect=config.timeout, read=config.timeout)
            )
        return _pools[config]


def _answer_code(body: bytes) -> str:
    start, end = body.find(b"<Code>"), body.find(b"</Code>")
    return body[start + 6 : end].decode("utf-8", "replace") if 0 <= start < end else ""


def get(uri: str, config: S3Config, *, if_match: str = "", max_bytes: int = 1 << 62) -> tuple[bytes, Any]:
    """One object's body and headers. boto3 signs a short-lived URL (its credential chain, region and addressing;
    nothing else of boto3 per request) and urllib3, botocore's own HTTP library, fetches it: half the client CPU of
    ``get_object`` (0.54 vs 1.16 ms a GET, measured against SeaweedFS), which matters where decode is the wall.
    Throttling (429/503), 5xx and connection errors are retried by urllib3's ``Retry`` (exponential backoff with
    jitter, a ``Retry-After`` respected) up to ``max_attempts``; the body is read in blocks and refused past
    ``max_bytes``."""
    import urllib3

    bucket, key = split(uri)
    headers = {"If-Match": f'"{if_match}"'} if if_match else {}
    try:
        url = client(config).generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=900)
    except Exception as exc:  # noqa: BLE001 - botocore's errors (no credentials), named by _error
        raise _error(uri, exc, config) from None
    retries = urllib3.Retry(
        total=max(1, config.max_attempts) - 1,
        backoff_factor=0.1,
        backoff_max=10.0,
        backoff_jitter=0.05,
        status_forcelist=sorted(RETRIED),
        allowed_methods=["GET"],
        raise_on_status=False,  # the last answer is read and named below
    )
    try:
        answer = _pool(config).request("GET", url, headers=headers, preload_content=False, retries=retries)
    except urllib3.exceptions.HTTPError as exc:
        why = type(exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason else exc).__name__
        raise SourceUnavailable(f"{uri}: cannot reach {config.where()} ({why})") from None
    try:
        if answer.status != 200:
            raise _status_error(uri, answer.status, _answer_code(answer.read(64 << 10)), config)
        chunks, size = [], 0
        for block in answer.stream(1 << 20):
            chunks.append(block)
            size += len(block)
            if size > max_bytes:
                raise ImageTooLarge(uri, f"object grew past the limit of {max_bytes:,} bytes while read")
        return b"".join(chunks), answer.headers
    finally:
        answer.release_conn()


def _status_error(uri: str, status: int, code: str, config: S3Config) -> ImsimError:
    from botocore.exceptions import ClientError

    answer: Any = {"Error": {"Code": code or str(status)}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return _error(uri, ClientError(answer, "GetObject"), config)


def dot_segments(key: str) -> bool:
    """Whether an object key holds a ``.`` or ``..`` segment (legal in S3, rewritten by every URL normaliser)."""
    return any(part in (".", "..") for part in key.split("/"))


def open_object(uri: str, limits: Any, config: S3Config) -> OpenedObject:
    """An object to read: its listed facts when ``uri`` is a :class:`Listed`, else one HEAD (a query, a thumbnail)."""

    check_path(uri)
    if not allowed(uri, limits.allowed_roots):
        raise PathNotAllowed(uri, "outside the allowed roots (IMSIM_ALLOWED_ROOTS)")
    if dot_segments(split(uri)[1]):
        raise ImageUnreadable(
            uri,
            "its key has a '.' or '..' path segment, which HTTP clients resolve before asking (a GET of 'a/../b.jpg' "
            "fetches 'b.jpg'): rename the object",
        )
    facts = getattr(uri, "facts", None)
    if facts is None or not facts[2]:
        bucket, key = split(uri)
        try:
            head = client(config).head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - named by _error
            raise _error(uri, exc, config) from None
        facts = facts_of({**head, "Size": head["ContentLength"]})
    return OpenedObject(str(uri), facts, limits, config)


PROBE_TIMEOUT = 5.0  # seconds a first LIST may take before an endpoint is called unreachable
_probed: set[tuple[S3Config, str]] = set()


def probe(uri: str, config: S3Config) -> None:
    """Before the first listing of a bucket: one 1-key LIST with a short timeout and no retry, so an endpoint that
    accepts connections and never answers is named in seconds (it took 8 attempts x 30 s before). Any answer, an error
    included, passes: the listing itself reports what is wrong."""
    bucket, key = split(uri)
    if (config, bucket) in _probed:
        return
    quick = dataclasses.replace(config, timeout=min(config.timeout, PROBE_TIMEOUT), max_attempts=1)
    try:
        client(quick).list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except Exception as exc:  # noqa: BLE001 - botocore's errors
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import ReadTimeoutError

        if isinstance(exc, ReadTimeoutError | BotoConnectionError):
            raise SourceUnavailable(
                f"{uri}: {config.where()} did not answer a 1-key LIST within {quick.timeout:g} s ({type(exc).__name__}): "
                "check IMSIM_S3_ENDPOINT and that the store is up"
            ) from None
    _probed.add((config, bucket))


def check_listable(uri: str, config: S3Config) -> str:
    """'' when one LIST of ``uri``'s prefix answers, else why not (for `imsim doctor`)."""
    bucket, key = split(canonical(uri))
    try:
        client(config).list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except Exception as exc:  # noqa: BLE001 - named by _error
        return str(_error(uri, exc, config))
    return ""
