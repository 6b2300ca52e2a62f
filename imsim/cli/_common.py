"""What every command group shares: the consoles, the progress display, common options, exit codes, JSON output."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..client.local import Client
from ..settings import Settings, get_settings
from ..sources.names import printable

# A message is never broken mid-line (paths and commands stay copyable), and nothing printed is read as rich markup
# unless the call says markup=True and escapes what it interpolates: a file named "[red]x.jpg" or "a[/]b.jpg" is
# printed as it is named (it used to lose its brackets, or raise MarkupError mid-report).
console = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)

# Exit codes, the same for every command (and in `imsim --help`)
OK, SOME_FAILED, ERROR, INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = (
    "Exit codes: 0 all done; 1 some files failed or an input matched no image (or a doctor check failed); "
    "2 bad input, configuration or an unreachable service; 130 interrupted."
)

ModelT = TypeVar("ModelT", bound=BaseModel)
WIDE = 110  # columns from which listings are tables; narrower, each item prints on lines of its own, nothing cut


def wide() -> bool:
    return console.width >= WIDE


FAILURES_SHOWN = 20  # failures printed with an outcome or a status (the rest: `imsim status JOB --failures all`)

ModelsOpt = Annotated[str | None, typer.Option("--models", "-m", help="Comma-separated model names (default: IMSIM_MODELS).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")]


class RateColumn(ProgressColumn):
    """Images per second: over the recent progress while running (its average until there is a recent window), over
    the whole run once finished (rich's own finished speed is the last window's: 3-7x the real average was shown)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        average = task.completed / elapsed if elapsed > 0 and task.completed else None
        speed = average if task.finished else (task.speed or average)
        return Text(f"{speed:,.1f} img/s" if speed else "- img/s", style="progress.data.speed")


class _Progress(Progress):
    """A progress display whose notes (warnings such as "no worker answers") can sit on lines of their own, whole,
    under the bars (a narrow terminal), instead of in a column they would be squeezed into."""

    notes_below = False

    def get_renderables(self) -> Any:
        yield self.make_tasks_table(self.tasks)
        if self.notes_below:
            for task in self.tasks:
                note = Text.from_markup(str(task.fields.get("note") or ""))  # markup: follow.py escapes what it puts in
                width = max(20, self.console.size.width - 2)
                for line in note.wrap(self.console, width):  # wrapped here: a live display would crop it at the edge
                    yield Text("  ") + line


def progress() -> Progress:
    """The progress line, fitted to the terminal: on one line at 80 columns (a narrower bar, no time-left estimate,
    a note on a line of its own under the bar), everything on one line when the terminal is wide."""
    narrow = err.size.width < 100
    columns: list[ProgressColumn | str] = [
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(bar_width=10 if narrow else 40),
        MofNCompleteColumn(),
        RateColumn(),
        *([] if narrow else [TimeRemainingColumn()]),
        TimeElapsedColumn(),
        *([] if narrow else [TextColumn("{task.fields[note]}")]),  # notes are markup: follow.py escapes them
    ]
    shown = _Progress(*columns, console=err, transient=False)
    shown.notes_below = narrow
    return shown


RANDOM_NOTE = "RANDOM weights (demo models built where the model hub was unreachable): these similarities mean nothing"


def warn_random(names: list[str]) -> None:
    """Say, on stderr, which of the models that produced the similarities just printed have random weights."""
    if names:
        err.print(f"!! {', '.join(names)}: {RANDOM_NOTE}", highlight=False)


def random_among(settings: Settings, names: list[str]) -> list[str]:
    """The configured models (no weights loaded) whose directory says its weights are random."""
    from ..models.base import random_weights

    return [n for n in names if random_weights(str(settings.family(n).model_dump().get("model", "")))]


def settings_with(models: str | None = None) -> Settings:
    settings = get_settings()
    return settings.replace(models=models) if models else settings


def client(models: str | None = None) -> Client:
    return Client(settings_with(models))


def print_file_report(
    failures: dict[str, str],
    unmatched: list[str],
    skipped_files: dict[str, int],
    *,
    failed: int | None = None,
    unmatched_count: int | None = None,
    more: str = "",
) -> None:
    """What a job did not store, file by file: failures with their reasons, inputs that matched no image, and what
    folder walks left out (by reason). ``failed``/``unmatched_count``: the totals, when only the first are given
    (``more`` says how to see the rest)."""
    for path, reason in failures.items():
        console.print(
            f"  [red]failed[/] {escape(printable(path))}: {escape(reason)}", markup=True, highlight=False, soft_wrap=True
        )
    if failed is not None and failed > len(failures):
        console.print(f"  ... and {failed - len(failures):,} more failed{more}", highlight=False)
    for item in unmatched:
        console.print(f"  [yellow]no image in[/] {escape(printable(item))}", markup=True, highlight=False, soft_wrap=True)
    if unmatched_count is not None and unmatched_count > len(unmatched):
        console.print(f"  ... and {unmatched_count - len(unmatched):,} more inputs matched no image", highlight=False)
    for reason, count in sorted(skipped_files.items()):
        console.print(f"  left out of the walk: {count} file(s): {reason}", highlight=False)


def parse_tag_options(items: list[str] | None) -> dict[str, str] | None:
    """``--tag KEY=VALUE`` options as a dict (None when none given); a malformed one is a one-line error."""
    from ..errors import ImsimError
    from ..expr import parse_tags

    try:
        return parse_tags(items) if items else None
    except ValueError as exc:
        raise ImsimError(str(exc)) from None


def csv_cell(text: str) -> str:
    """A CSV cell that a spreadsheet shows as text and never runs as a formula (a file named ``=HYPERLINK(...).jpg``)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def print_json(payload: Any) -> None:
    console.print_json(json.dumps(payload, default=str))


def print_json_or(outcome: dict[str, Any], as_json: bool) -> None:
    """The outcome as JSON, or as ``key: value`` lines for a person (a mapping as ``name N, name N``, a list of paths
    one per line, every path printable)."""
    if as_json:
        print_json(outcome)
        return
    for key, value in outcome.items():
        label = key.replace("_", " ")
        if isinstance(value, dict):
            shown = ", ".join(f"{printable(str(k))} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in value.items())
            console.print(f"{label}: {shown or 'none'}", highlight=False, soft_wrap=True)
        elif isinstance(value, list):
            console.print(f"{label}: {len(value)}", highlight=False)
            for item in value:
                console.print(f"  {printable(str(item))}", highlight=False, soft_wrap=True)
        else:
            console.print(f"{label}: {value:,}" if isinstance(value, int) else f"{label}: {value}", highlight=False)


def stamp(t: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def flag_of(field: str) -> str:
    """The CLI option that sets a vocabulary field: ``k`` → ``-k``, ``min_width`` → ``--min-width``."""
    return "-k" if field == "k" else "--" + field.replace("_", "-")


def help_of(model: type[BaseModel], field: str) -> str:
    """A vocabulary field's description, as its CLI option's help (declared once, in :mod:`imsim.vocabulary`)."""
    return model.model_fields[field].description or ""


def build(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """A vocabulary request from the CLI's options (None: not given, the field's default), or one error naming the
    option (exit 2), as the API names the field in its 422."""
    from pydantic import ValidationError

    given = {name: value for name, value in values.items() if value is not None}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        from ..errors import InvalidInput

        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ())]
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise InvalidInput(f"{flag_of(loc[0])}: {message}" if loc else message) from None


def remote_url(settings: Settings) -> str:
    """The `imsim serve` to ask instead of loading models here: IMSIM_API_URL, else one this data dir's store runs
    (said once on stderr, since it answers with that server's models and store)."""
    url = settings.resolved_api_url
    if url and not settings.api_url:
        err.print(f"asking the running imsim serve at {url} (its models are loaded; IMSIM_API_URL=off to load them here)")
    return url
