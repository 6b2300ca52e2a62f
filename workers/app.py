"""The Celery application, configured from imsim's settings (broker and state in Redis, JSON only), the one
remote-control command imsim adds: ``imsim_identity``, which `imsim doctor` asks every worker for (its queue's models
and model settings, so a fleet that disagrees is named before its chunks circle), and each worker's heartbeat with
that identity (:meth:`imsim.jobs.records.JobStore.fleet_beat`): a worker refusing a chunk fails it only when no worker that
can take it has beaten lately, never because the right workers are busy."""

import logging
import threading
from typing import Any

from celery import signals
from celery.worker.control import inspect_command

from imsim.jobs.fleet import FLEET_TTL
from imsim.jobs.queue import fleet_identity, identity_digest, job_store, make_celery
from imsim.settings import get_settings

app = make_celery(get_settings(), main="workers")
app.conf.include = ["workers.tasks"]
log = logging.getLogger(__name__)
_stop = threading.Event()


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    identity, name = identity_digest(fleet_identity(settings)), getattr(sender, "hostname", "") or "worker"

    def beat() -> None:
        while True:
            try:
                job_store(settings).fleet.fleet_beat(settings.queue, identity, name)
            except Exception as exc:  # noqa: BLE001 - a missed beat only delays a failure; never kill the worker
                log.debug("fleet heartbeat: %s", exc)
            if _stop.wait(FLEET_TTL / 4):
                return

    threading.Thread(target=beat, name="imsim-fleet-heartbeat", daemon=True).start()


@signals.worker_shutdown.connect
def _leave(sender: Any = None, **_: Any) -> None:
    _stop.set()
    settings = get_settings()
    try:
        job_store(settings).fleet.fleet_leave(
            settings.queue, identity_digest(fleet_identity(settings)), getattr(sender, "hostname", "") or "worker"
        )
    except Exception as exc:  # noqa: BLE001 - its entry expires after FLEET_TTL anyway
        log.debug("fleet leave: %s", exc)


@inspect_command()
def imsim_identity(state: Any) -> dict[str, Any]:
    """The models this worker embeds with and the digest of each one's settings (:func:`imsim.jobs.queue.fleet_identity`),
    and whether it can list each ``s3://`` allowed root with its own credentials ('' when it can)."""
    from imsim.sources import s3

    settings = get_settings()
    config = s3.S3Config.from_settings(settings)
    roots = {r: s3.check_listable(r, config) for r in settings.allowed_root_paths if s3.is_uri(r)}
    return {"queue": settings.queue, "models": fleet_identity(settings), "s3": roots}
