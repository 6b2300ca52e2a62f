"""The ``imsim`` command line: a thin layer over :mod:`imsim.client.local`, :mod:`imsim.ingest` and :mod:`imsim.jobs.queue`.

One module per command group (``ingest``, ``search``, ``jobs``, ``models``, ``eval``, ``admin``); this one
assembles them and turns expected errors into one line and an exit code (see ``imsim --help``)."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.markup import escape

from ..errors import ImsimError
from ..sources.names import printable
from . import admin, eval, ingest, jobs, models, review, search, topics
from ._common import ERROR, EXIT_CODES, INTERRUPTED, err

app = typer.Typer(
    help="imsim: image-similarity search over CLIP, DINOv2 and other embeddings in Milvus.\n\n"
    "\b\nExamples:\n"
    "  imsim ingest --local ~/Pictures        embed and store, in this process\n"
    "  imsim search photo.jpg -k 20           the most similar stored images\n"
    "  imsim duplicates                       near-duplicate groups to review\n"
    "  imsim serve                            the API and pages; the CLI then asks it\n\n"
    f"{EXIT_CODES}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for group in (ingest.app, search.app, review.app, topics.app, jobs.app, admin.app):
    app.registered_commands += group.registered_commands
app.add_typer(models.app, name="models")
app.add_typer(review.review_app, name="review")
app.add_typer(eval.app, name="eval")
app.add_typer(admin.store_app, name="store")
app.add_typer(admin.bench_app, name="bench")


def main() -> None:
    try:
        _note_served_store()
        command = typer.main.get_command(app)
        polish(command)
        command(prog_name="imsim")
    except ImsimError as exc:
        err.print(f"[red]error:[/] {escape(printable(str(exc)))}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(ERROR)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(INTERRUPTED)
    except Exception as exc:
        from ..jobs.health import redis_problem

        why = redis_problem(exc)  # Redis's errors as one line (the URL may hold a password: never printed)
        if why is None:
            raise
        err.print(f"[red]error:[/] {escape(why)}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(ERROR)


def polish(command: Any) -> None:
    """Help as a reader wants it at any width: each paragraph of a docstring reflowed (the source's line breaks fell
    mid-sentence), ``\\b`` blocks (examples) kept as written, and no ``<bool>`` type shown beside a flag (``--help``
    included, which click adds per call: hence the one class-level change below)."""
    if command.help:
        command.help = reflow(command.help)
    for sub in getattr(command, "commands", {}).values():
        polish(sub)


_typed = typer.core.TyperOption.display_type_rich


def _flag_without_type(self: Any, ctx: Any) -> str | None:
    return "" if getattr(self, "is_flag", False) else _typed(self, ctx)


typer.core.TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]


def reflow(text: str) -> str:
    paragraphs = []
    for paragraph in text.strip().split("\n\n"):
        if paragraph.lstrip().startswith("\b"):
            paragraphs.append(paragraph.replace("\b\n", "", 1))
        else:
            paragraphs.append(" ".join(paragraph.split()))
    return "\n\n".join(paragraphs)


ASKS_SERVE = ("search", "compare", "duplicates")  # the commands a running `imsim serve` answers


def _note_served_store() -> None:
    """Say when the Lite store is used through a running `imsim store serve` found in the data dir (not exported)."""
    if len(sys.argv) > 2 and sys.argv[1:3] == ["store", "serve"] or any(a in ("--help", "-h") for a in sys.argv[1:]):
        return
    from ..settings import get_settings

    settings = get_settings()
    if len(sys.argv) > 1 and sys.argv[1] in ASKS_SERVE and settings.resolved_api_url:
        return  # it asks the running `imsim serve` (and says so), not the store
    served = settings.served_store
    if served:
        err.print(f"note: using the store served by `imsim store serve` (pid {served['pid']}) at {served['uri']}")


__all__ = ["app", "main"]
