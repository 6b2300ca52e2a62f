"""Redis as the CLI and `imsim doctor` see it: a Redis error as one line (never the URL, which may hold a password),
and the health checks (it answers; its AOF persistence keeps queued chunks over a restart). With :mod:`imsim.jobs.records`,
:mod:`imsim.jobs.queue` and the workers, the only code that imports redis."""

from __future__ import annotations


def redis_problem(exc: BaseException) -> str | None:
    """One line saying what a Redis error means (never the URL, which may hold a password); None when ``exc`` is not
    Redis's."""
    import sys

    redis = sys.modules.get("redis")  # not imported: it cannot be Redis's error
    if redis is None or not isinstance(exc, redis.RedisError):
        return None
    if isinstance(exc, redis.AuthenticationError):
        return "Redis refused the password in IMSIM_REDIS_URL"
    if isinstance(exc, redis.ResponseError):  # Redis answered: full (maxmemory), read-only replica, ...
        return "Redis is full (maxmemory reached): free memory or raise maxmemory" if "OOM" in str(exc) else str(exc)
    return f"Redis is unreachable ({type(exc).__name__}: {exc}); check IMSIM_REDIS_URL and that redis-server runs"


def redis_health(url: str, where: str) -> list[tuple[str, str, str]]:
    """(check, status, detail) for `imsim doctor`: Redis answers at ``url`` (named ``where``, redacted), and whether
    its AOF persistence keeps queued chunks over a restart."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3, decode_responses=True)
    except ValueError as exc:
        return [("redis", "fail", f"IMSIM_REDIS_URL is not a Redis URL ({exc}); e.g. redis://127.0.0.1:6379/0")]
    try:
        client.ping()
    except redis.AuthenticationError:
        return [("redis", "fail", f"Redis at {where} refused the password in IMSIM_REDIS_URL")]
    except redis.RedisError as exc:
        return [("redis", "fail", f"Redis at {where} is unreachable ({type(exc).__name__}); start it or fix IMSIM_REDIS_URL")]
    checks = [("redis", "ok", f"Redis at {where} answers")]
    try:
        aof = client.config_get("appendonly").get("appendonly")
    except redis.RedisError:
        aof = None
    if aof == "yes":
        checks.append(("redis persistence", "ok", "AOF is on: queued chunks survive a Redis restart"))
    elif aof == "no":
        checks.append(
            (
                "redis persistence",
                "warn",
                "AOF is off: a Redis restart loses every queued chunk; "
                "run redis-server with --appendonly yes (see docs/operations.md)",
            )
        )
    else:
        checks.append(
            ("redis persistence", "warn", "cannot read Redis's appendonly setting (CONFIG is disabled); make sure AOF is on")
        )
    return checks
