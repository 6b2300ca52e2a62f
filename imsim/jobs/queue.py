"""The Redis/Celery side of ingestion, as seen from imsim: Celery's configuration, queuing, retrying and
cancelling a job, and splitting a chunk that keeps killing its worker.

``workers/`` builds its Celery app from :func:`celery_config`; the CLI and client queue jobs by task *name*
(:data:`EMBED_CHUNK`), so the library never imports the worker package. One message carries one :class:`Chunk`
of paths; the worker batches inside the task. A job's paths are streamed into chunks as they are found (a
million files never make one list), and cancelling a job is one flag the workers read. What the queue reads from
the settings is :class:`QueueConfig`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import JobRunning, QueueError
from ..settings import Settings
from ..sources.paths import Discovery, PathList
from ..util import batched
from ..vocabulary import IngestOptions
from .records import JobStore, new_job_id
from .status import SUMMARY_ITEMS, JobStatus

EMBED_CHUNK = "imsim.embed_chunk"
PRIORITY_SEP = "\x06\x16"  # kombu's redis transport keeps priority levels in lists named QUEUE + this + level


@dataclass(frozen=True)
class QueueConfig:
    """What the queue needs from the settings, and nothing else: the broker, the queue's name, chunking, redelivery,
    task events, how long job records stay, and the models a job is queued for. Every function here takes one, or the
    settings (read through :meth:`of`)."""

    # no defaults: every value comes from the settings' QueueSection (one declaration each), through :meth:`of`
    redis_url: str = field(repr=False)  # may hold a password
    queue: str
    chunk_size: int
    visibility_timeout: int
    redelivery_interval: int
    task_events: bool
    job_retention: int
    models: Mapping[str, str]  # model -> settings digest (:func:`fleet_identity`)

    @classmethod
    def of(cls, source: QueueConfig | Settings) -> QueueConfig:
        if isinstance(source, QueueConfig):
            return source
        return cls(
            redis_url=source.redis_url.get_secret_value(),
            queue=source.queue,
            chunk_size=source.chunk_size,
            visibility_timeout=source.visibility_timeout,
            redelivery_interval=source.redelivery_interval,
            task_events=source.task_events,
            job_retention=source.job_retention,
            models=fleet_identity(source),
        )


def celery_config(source: QueueConfig | Settings) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, redelivery when a worker dies, one chunk at a time, task events on
    (so Flower shows waiting and running chunks), no result backend (see below)."""
    config = QueueConfig.of(source)
    url = config.redis_url
    return {
        "broker_url": url,
        # No chunk's return value is read: a job's progress, counts and failures live in its job record
        # (imsim.jobs.records), and Flower shows each chunk's states from task events. A result backend would keep
        # one key per chunk (3,907 for 1M files) for the retention and write a STARTED state before each chunk.
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": config.queue,
        "task_send_sent_event": config.task_events,  # a queued chunk shows in Flower before a worker takes it
        "worker_send_task_events": config.task_events,
        "broker_connection_retry_on_startup": True,
        # A chunk whose worker died (SIGKILL, node lost) stays "unacked" in Redis; every worker sweeps
        # for ones older than the visibility timeout each `redelivery_interval` seconds and re-queues them.
        # The sweep runs under a Redis lock; a worker SIGKILLed while holding it would block every
        # other worker's sweep for kombu's default 300 s, so the lock expires after a few sweep periods.
        # (Two sweeps overlapping is harmless: each restore is a WATCHed transaction.)
        "broker_transport_options": {
            "visibility_timeout": config.visibility_timeout,
            "unacked_restore_interval": config.redelivery_interval,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": restore_lock_expiry(config),
        },
        "worker_hijack_root_logger": False,
    }


def restore_lock_expiry(source: QueueConfig | Settings) -> int:
    """Seconds before the lock around kombu's redelivery sweep expires if its holder died."""
    return max(10, 3 * QueueConfig.of(source).redelivery_interval)


def make_celery(source: QueueConfig | Settings, main: str = "imsim") -> Any:
    from celery import Celery

    app = Celery(main)
    app.conf.update(celery_config(source))
    return app


def job_store(source: QueueConfig | Settings) -> JobStore:
    config = QueueConfig.of(source)
    return JobStore(config.redis_url, retention=config.job_retention)


def fleet_identity(settings: Settings) -> dict[str, str]:
    """model -> a digest of the settings that change its vectors (its family config's identity: pooling, input size
    ...; not the weights' path, which may differ between machines, nor the revision, which the job's recorded model
    versions check after loading): what a job is queued for, and what a worker can embed."""
    return {name: settings.family(name).digest() for name in settings.model_names}


def identity_digest(models: dict[str, str]) -> str:
    """One short name for a fleet identity (the models and their settings digests), as workers announce it."""
    import hashlib

    return hashlib.sha256(json.dumps(models, sort_keys=True).encode()).hexdigest()[:16]


MESSAGE_VERSION = 1  # of :meth:`Chunk.to_message`; a worker refuses a newer one by name


@dataclass(frozen=True)
class Chunk:
    """One chunk of a job: the unit of work one Celery message carries (paths, and how to ingest them), with the
    models and model settings the job was queued for (:func:`fleet_identity`): a worker that embeds with others
    refuses it, so one queue served by differently configured workers never leaves holes or mixes versions."""

    job_id: str
    key: str  # "3"; "3.0" and "3.1" once split
    paths: list[str]
    force: bool = False
    checksum: bool = False
    tags: dict[str, str] | None = None
    models: dict[str, str] | None = None  # model -> settings digest; None: a message from before this field
    listed: dict[str, list[Any]] | None = None  # s3:// path -> [size, mtime, "etag:..."] as its listing gave them

    @classmethod
    def of(cls, job_id: str, key: str, paths: Sequence[str], **options: Any) -> Chunk:
        """A chunk of ``paths``, keeping what a listing said of each :class:`imsim.sources.s3.Listed` object."""
        from ..sources.s3 import Listed

        listed = {str(p): list(p.facts) for p in paths if isinstance(p, Listed)}
        return cls(job_id, key, [str(p) for p in paths], listed=listed or None, **options)

    def items(self) -> list[str]:
        """The paths to ingest, listed objects with their listing facts again (so none is asked for them twice)."""
        if not self.listed:
            return list(self.paths)
        from ..sources.s3 import Listed

        facts = self.listed
        return [Listed(p, (int(facts[p][0]), float(facts[p][1]), str(facts[p][2]))) if p in facts else p for p in self.paths]

    def to_message(self) -> dict[str, Any]:
        """The chunk as the one argument of its Celery message: named fields, versioned, JSON-safe."""
        message: dict[str, Any] = {"v": MESSAGE_VERSION, "job_id": self.job_id, "key": self.key, "paths": list(self.paths)}
        message |= {"force": self.force, "checksum": self.checksum, "tags": self.tags, "models": self.models}
        return message | ({"listed": self.listed} if self.listed else {})

    @classmethod
    def from_message(cls, args: Sequence[Any], kwargs: dict[str, Any] | None = None) -> Chunk | None:
        """The chunk a Celery message carries (``args``/``kwargs`` as the task received them); None when they hold
        none. Reads this version's one-dict form and the positional form queued before it
        (``[job_id, key, paths]`` plus options by name), so an upgrade never strands queued chunks."""
        kwargs = dict(kwargs or {})
        if args and isinstance(args[0], dict):
            message = dict(args[0])
            if int(message.pop("v", MESSAGE_VERSION)) > MESSAGE_VERSION:
                raise ValueError(f"chunk message version {args[0].get('v')} is newer than this worker reads")
        elif len(args) >= 3:
            message = {"job_id": args[0], "key": args[1], "paths": args[2]} | kwargs
        else:
            return None
        fields = {"force", "checksum", "tags", "models", "listed"}
        options = {name: message[name] for name in fields if message.get(name) is not None}
        return cls(str(message["job_id"]), str(message["key"]), [str(p) for p in message["paths"] or []], **options)

    def mismatch(self, mine: dict[str, str]) -> str:
        """Why a worker embedding with ``mine`` cannot take this chunk ('' when it can)."""
        if self.models is None or self.models == mine:
            return ""
        missing = sorted(set(self.models) - set(mine))
        extra = sorted(set(mine) - set(self.models))
        differ = sorted(m for m in set(self.models) & set(mine) if self.models[m] != mine[m])
        parts = []
        if missing:
            parts.append(f"it lacks {', '.join(missing)}")
        if extra:
            parts.append(f"it also embeds {', '.join(extra)}")
        if differ:
            parts.append(f"its settings for {', '.join(differ)} differ (IMSIM_<MODEL>_* such as pooling)")
        return "; ".join(parts)

    def halves(self) -> list[Chunk]:
        half = len(self.paths) // 2
        return [
            replace(self, key=f"{self.key}.0", paths=self.paths[:half], listed=self._listed_of(self.paths[:half])),
            replace(self, key=f"{self.key}.1", paths=self.paths[half:], listed=self._listed_of(self.paths[half:])),
        ]

    def _listed_of(self, paths: Sequence[str]) -> dict[str, list[Any]] | None:
        if not self.listed:
            return None
        return {p: self.listed[p] for p in paths if p in self.listed} or None


def send_chunk(app: Any, source: QueueConfig | Settings, chunk: Chunk) -> None:
    """Queue one chunk (by task name: the library never imports the workers), its body compressed: the paths of a
    chunk share most of their bytes, and Redis holds every queued message."""
    app.send_task(
        EMBED_CHUNK,
        args=[chunk.to_message()],
        queue=QueueConfig.of(source).queue,
        compression="zlib",
        # readable without the body: a cancel finds the job's queued messages by these (:func:`purge`)
        headers={"imsim_job": chunk.job_id, "imsim_chunk": chunk.key, "imsim_files": len(chunk.paths)},
    )


def enqueue(
    paths: Iterable[str],
    source: QueueConfig | Settings,
    options: IngestOptions | None = None,
    *,
    inputs: Sequence[str] = (),
    job_id: str | None = None,
    retry_of: str = "",
    found: Discovery | None = None,
    path_list: PathList | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> str:
    """Record a job in Redis and queue its chunks as ``paths`` streams in; returns the job id.

    The job exists (state ``queuing``) from its first chunk on, so workers start while the rest is sent, and it cannot
    finish before the last chunk went out. ``options`` (:class:`~imsim.vocabulary.IngestOptions`: force, checksum,
    tags, checked when they were made) travel in every chunk. ``found`` (a streamed expansion) records what the inputs
    left out; ``path_list`` records a ``--from-file`` list by size and digest. ``on_sent(files)`` is told after each
    chunk. Redis failing mid-way (full: ``maxmemory``) ends the job with the chunks that went out and raises a
    :class:`QueueError` saying how many did. An empty ``paths`` queues nothing and raises :class:`QueueError`."""
    import redis
    from kombu.exceptions import OperationalError

    options = options or IngestOptions()
    tags = dict(options.tags) or None
    config = QueueConfig.of(source)
    if not config.models:  # a chunk for no models would be refused by every worker
        raise QueueError("the queue config names no models: a job is queued for models (QueueConfig.of(settings))")
    jobs = job_store(config)
    jobs.ping()
    stream = iter(paths)
    first = next(stream, None)
    if first is None:
        raise QueueError("no image files to queue")
    job_id = job_id or new_job_id()
    models = dict(config.models)
    jobs.create(
        job_id,
        inputs=list(inputs)[:SUMMARY_ITEMS],
        inputs_count=len(inputs),
        models=list(models),
        retry_of=retry_of,
        queuing=True,
    )
    app = make_celery(config)
    sent = files = 0
    uncounted = 0  # files of a chunk that went out but whose count the job record refused (Redis full)
    try:
        for index, part in enumerate(batched(itertools.chain([first], stream), config.chunk_size)):
            chunk = Chunk.of(job_id, str(index), part, force=options.force, checksum=options.checksum, tags=tags, models=models)
            if index and index % CANCEL_CHECK == 0 and jobs.is_cancelled(job_id):
                break  # cancelled while it was being queued: nothing more goes out (cancel purged what had)
            send_chunk(app, config, chunk)
            sent, files, uncounted = sent + 1, files + len(part), len(part)  # it is on the queue: it counts as sent
            jobs.add_chunks(job_id, len(part))
            uncounted = 0
            if on_sent is not None:
                on_sent(len(part))
    except (redis.RedisError, OSError, OperationalError) as exc:
        raise _stopped(jobs, job_id, exc, sent, files, uncounted) from None
    if jobs.is_cancelled(job_id):
        purge(job_id, config)  # chunks sent after the cancel's own purge
    jobs.seal(
        job_id,
        skipped=found.skipped if found is not None else None,
        unmatched=found.unmatched if found is not None else [],
        path_list=path_list.summary() if path_list is not None else None,
    )
    return job_id


def _stopped(jobs: JobStore, job_id: str, exc: BaseException, sent: int, files: int, uncounted: int) -> QueueError:
    """End a job whose queuing Redis stopped (full: ``maxmemory``) with the chunks that went out, and say so."""
    import redis

    why = _redis_why(exc)
    if uncounted:
        try:
            jobs.add_chunks(job_id, uncounted)
        except redis.RedisError:
            why += f" (the last chunk's {uncounted} files went out but the job record could not count them)"
    try:
        jobs.seal(job_id, error=f"queuing stopped after {sent} chunks ({files} files): {why}")
    except redis.RedisError:  # a full Redis refuses scripts; HDEL frees memory, so it is still allowed
        jobs.abandon_queuing(job_id, sent)
    return QueueError(
        f"queuing job {job_id} stopped after {sent} chunks ({files} files): {why}. Those chunks are queued and the "
        f"job ends with them; re-run the same ingest once Redis has room: stored files are skipped"
    )


def _redis_why(exc: BaseException) -> str:
    text = str(exc)
    if "OOM" in text or "maxmemory" in text:
        return "Redis is full (maxmemory reached): free memory or raise maxmemory"
    return f"{type(exc).__name__}: {text}"


def failed_files(job_id: str, source: QueueConfig | Settings) -> Iterator[str]:
    """The paths that failed in ``job_id``, byte-exact, streamed; :class:`JobRunning` while the job still runs."""
    jobs = job_store(source)
    status = jobs.reads.get(job_id)
    if not status.finished_at:
        raise JobRunning(
            f"job {job_id} is still {status.state} ({status.settled}/{status.total} files settled): wait "
            f"for it to finish (`imsim status {job_id}`, Client.wait) before retrying its failures"
        )
    return (path for path, _ in jobs.reads.iter_failures(job_id))


def retry(job_id: str, source: QueueConfig | Settings) -> str | None:
    """Queue a new job holding only the files that failed in ``job_id``; returns its id, or None if none failed."""
    config = QueueConfig.of(source)
    failed = failed_files(job_id, config)
    if not job_store(config).reads.get(job_id).failed:
        return None
    return enqueue(failed, config, inputs=[f"failed files of {job_id}"], retry_of=job_id)


def cancel(job_id: str, source: QueueConfig | Settings) -> JobStatus:
    """Cancel a job: it is marked cancelled at once (workers check the mark before each chunk and each slice, so running
    chunks stop at their next slice), then its chunks still waiting on the queue are taken off it and counted as
    cancelled (:func:`purge`), so nothing of it stays queued, with or without a worker. Returns the job's status."""
    config = QueueConfig.of(source)
    jobs = job_store(config)
    jobs.ping()
    jobs.mark_cancelled(job_id)
    purge(job_id, config)
    return jobs.reads.get(job_id)


CANCEL_CHECK = 64  # chunks sent between two looks at the job's cancel flag while it is being queued
PURGE_PAGE = 1000  # queued messages one script call looks at (atomic per page: workers keep popping between pages)
TOMBSTONE = "imsim:cancelled-chunk"
_PURGE = """
local items = redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])
local found = {}
for i, item in ipairs(items) do
  local ok, message = pcall(cjson.decode, item)
  if ok and type(message) == 'table' and type(message.headers) == 'table' and message.headers.imsim_job == ARGV[3] then
    redis.call('LSET', KEYS[1], tonumber(ARGV[1]) + i - 1, ARGV[4])
    table.insert(found, (message.headers.imsim_chunk or '') .. ' ' .. tostring(message.headers.imsim_files or 0))
  end
end
return {#items, found}
"""


def purge(job_id: str, source: QueueConfig | Settings) -> tuple[int, int]:
    """Take ``job_id``'s chunks off the queue (every priority list) and count them cancelled in its record; returns
    (chunks, files). The queue is read a page at a time from its head, where new messages arrive (so a page that moved
    is read again, never skipped); each message of the job is replaced by a tombstone inside the page's script, and the
    tombstones go in one LREM at the end. Cost: one pass over what is queued, whatever the job's size."""
    config = QueueConfig.of(source)
    jobs = job_store(config)
    script = jobs.redis.register_script(_PURGE)
    chunks = files = 0
    for key in [config.queue] + [f"{config.queue}{PRIORITY_SEP}{n}" for n in range(10)]:
        start, marked = 0, 0
        while True:
            seen, found = script(keys=[key], args=[start, start + PURGE_PAGE - 1, job_id, TOMBSTONE])
            for entry in found:
                chunk, _, count = (entry.decode() if isinstance(entry, bytes) else str(entry)).rpartition(" ")
                jobs.record_chunk(job_id, chunk, 0, 0, {}, cancelled=int(count or 0))
                chunks, files, marked = chunks + 1, files + int(count or 0), marked + 1
            if int(seen) < PURGE_PAGE:
                break
            start += PURGE_PAGE
        if marked:
            jobs.redis.lrem(key, 0, TOMBSTONE)
    return chunks, files


def queue_length(source: QueueConfig | Settings) -> int:
    """Chunks waiting on the queue (every priority level)."""
    config = QueueConfig.of(source)
    lists = [config.queue] + [f"{config.queue}{PRIORITY_SEP}{n}" for n in range(10)]
    return int(sum(job_store(config).redis.llen(q) for q in lists))


def worker_answers(source: QueueConfig | Settings, timeout: float = 1.5) -> dict[str, dict[str, Any]] | None:
    """worker name -> its ``imsim_identity`` answer (``models``: model -> settings digest; ``s3``: allowed s3:// root
    -> '' when it lists from there, else why not), for the workers of the queue that answer (None when the broker
    cannot be asked)."""
    config = QueueConfig.of(source)
    try:
        replies = make_celery(config).control.broadcast("imsim_identity", reply=True, timeout=timeout) or []
    except Exception:  # any broker failure means "cannot ask"
        return None
    out: dict[str, dict[str, Any]] = {}
    for reply in replies:
        for name, answer in reply.items():
            if isinstance(answer, dict) and answer.get("queue") == config.queue:
                out[name] = answer
    return out


def worker_identities(source: QueueConfig | Settings, timeout: float = 1.5) -> dict[str, dict[str, str]] | None:
    """worker name -> the models it embeds with (model -> settings digest); see :func:`worker_answers`."""
    answers = worker_answers(source, timeout)
    return None if answers is None else {name: dict(a.get("models") or {}) for name, a in answers.items()}


def workers_on_queue(source: QueueConfig | Settings, timeout: float = 1.0) -> list[str] | None:
    """Names of the workers that consume the queue (asked over the broker), or None if they cannot be asked.

    A ping would also count workers of other queues on the same Redis; this asks each for its queues."""
    config = QueueConfig.of(source)
    try:
        replies = make_celery(config).control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # any broker failure means "cannot ask"
        return None
    return sorted(name for name, queues in replies.items() if any(q.get("name") == config.queue for q in queues or []))
