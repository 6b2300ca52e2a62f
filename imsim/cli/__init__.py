"""The ``imsim`` command line: a thin layer over :mod:`imsim.query`, :mod:`imsim.ingest` and :mod:`imsim.queue`.

One module per command group (``ingest``, ``search``, ``jobs``, ``models``, ``eval``, ``admin``); this one
assembles them and turns expected errors into one line and an exit code (see ``imsim --help``)."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from ..errors import ImsimError
from . import admin, eval, ingest, jobs, models, search
from ._common import ERROR, EXIT_CODES, INTERRUPTED, err

app = typer.Typer(
    help=f"imsim: image-similarity search over CLIP, DINOv2 and other embeddings in Milvus. {EXIT_CODES}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for group in (ingest.app, search.app, jobs.app, admin.app):
    app.registered_commands += group.registered_commands
app.add_typer(models.app, name="models")
app.add_typer(eval.app, name="eval")
app.add_typer(admin.store_app, name="store")
app.add_typer(admin.bench_app, name="bench")


def main() -> None:
    import redis

    try:
        app()
    except ImsimError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(ERROR)
    except redis.AuthenticationError:
        err.print("[red]error:[/] Redis refused the password in IMSIM_REDIS_URL", markup=True, highlight=False)
        sys.exit(ERROR)
    except redis.RedisError as exc:  # the URL may hold a password: name only the error
        err.print(
            f"[red]error:[/] Redis is unreachable ({type(exc).__name__}: {escape(str(exc))}); check IMSIM_REDIS_URL and "
            "that redis-server runs",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(ERROR)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(INTERRUPTED)


__all__ = ["app", "main"]
