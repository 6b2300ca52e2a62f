"""The one embedding step: files (or query images) → every model's vectors, the same way for ingest, query and eval.

Built from the models and the :class:`~imsim.sources.reading.Limits` made from settings, it owns the worker pool, the
read and decode limits, the decoder, the draft scale and the timing. Per file, each model's input is made from
that model alone: a JPEG is DCT-decoded at the scale the model's own input size needs (models whose scales
agree share one decode), then resized and cropped to uint8 (:meth:`~imsim.models.base.Preprocess.to_uint8`).
So the vector a model version stores for a file never depends on which other models are enabled.

Files stream through in slices (``slice_size`` images). The fetch stage (:mod:`imsim.sources.fetch`) opens each one,
asks the caller's :class:`~imsim.sources.fetch.SkipRule` whether it is stored unchanged (by size, mtime and inode:
nothing read), reads and hashes it, asks again by content, and hands it to this step, which decodes and resizes it on
the same pool thread; while the models run on one slice, the pool is already on the next, and the caller (ingest)
writes the previous one. A bad file fails alone with its reason. Query images (bytes, PIL images) come in through
:mod:`imsim.client.queries`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import ImageError, ImageTooLarge
from .images import DecodeBudget, decode_array, decode_memory, jpeg_draft_scale, read_header, resolve_decoder
from .models.base import Embedder, Preprocess, embed_arrays
from .sources.fetch import Fetched, Fetcher, Restamp, Skipped, SkipRule
from .sources.files import FileBytes, FileFacts
from .sources.names import absolute
from .sources.reading import DEFAULT_LIMITS, Limits
from .timing import StageTimes, timed

if TYPE_CHECKING:
    from .settings import Settings

LOOKAHEAD = 1  # slices read and decoded ahead of the one the models are running on


@dataclass(frozen=True)
class ImageRecord(FileFacts):
    """An embedded image: the facts about its file and its full-resolution size after EXIF orientation."""

    width: int
    height: int


@dataclass
class Embedded:
    """One slice (or several, merged): the images embedded, in order, each model's vectors for them, the files that
    failed (path -> reason), those the :class:`SkipRule` left out (stored unchanged) and those it marked for a
    restamp (stored with the same content; ``sha256`` is empty where the file was not read)."""

    images: list[ImageRecord] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    restamp: list[FileFacts] = field(default_factory=list)

    def extend(self, other: Embedded) -> None:
        self.images += other.images
        self.failures.update(other.failures)
        self.skipped += other.skipped
        self.restamp += other.restamp
        for name, vecs in other.vectors.items():
            self.vectors[name] = np.concatenate([self.vectors[name], vecs]) if name in self.vectors else vecs


@dataclass(frozen=True)
class _Prepared:
    record: ImageRecord
    arrays: dict[str, np.ndarray]  # model -> HWC uint8 input


_Outcome = _Prepared | Fetched


def _one_torch_thread() -> None:
    """Pool threads resize with torch one thread each (a per-thread OpenMP setting), so several pool threads never
    share, and spin on, torch's intra-op pool; the models keep the main thread's setting."""
    import torch

    torch.set_num_threads(1)


class EmbeddingStep:
    """Read, decode, resize and embed with every model; the only place images become vectors."""

    def __init__(
        self,
        models: Mapping[str, Embedder],
        limits: Limits = DEFAULT_LIMITS,
        *,
        workers: int = 0,
        slice_size: int = 64,
        decoder: str = "auto",
        io_workers: int = 32,
    ):
        self.models = dict(models)
        self.limits = limits
        self.slice_size = max(1, slice_size)
        self.decoder = resolve_decoder(decoder)
        self.workers = workers or os.cpu_count() or 1
        self.budget = DecodeBudget.process(limits.decode_bytes)
        self._pool = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="imsim-decode", initializer=_one_torch_thread
        )
        self.fetcher: Fetcher[_Prepared] = Fetcher(limits, self._prepare, self._pool, io_workers)

    @classmethod
    def from_settings(cls, settings: Settings, models: Mapping[str, Embedder]) -> EmbeddingStep:
        return cls(
            models,
            Limits.from_settings(settings),
            workers=settings.decode_workers,
            slice_size=settings.batch_size,
            decoder=settings.decoder,
            io_workers=settings.s3_concurrency,
        )

    # --- one file: read, decode, resize ------------------------------------------------------
    def _inputs(
        self,
        image: np.ndarray,
        scale: int,
        model_names: Iterable[str],
        times: StageTimes | None,
        made: dict[tuple[Preprocess, int], np.ndarray],
    ) -> dict[str, np.ndarray]:
        out = {}
        for name in model_names:
            recipe = self.models[name].preprocess
            key = (recipe, scale)
            if key not in made:  # models with one recipe at one scale share the array
                with timed(times, "resize"):
                    made[key] = recipe.to_uint8(image)
            out[name] = made[key]
        return out

    def _check_aspect(self, path: str, width: int, height: int) -> None:
        ratio = max(width, height) / max(1, min(width, height))
        if ratio <= self.limits.max_aspect_ratio:
            return
        keeping = [n for n, m in self.models.items() if not m.preprocess.fixed_size and not m.preprocess.exact]
        if keeping:
            raise ImageTooLarge(
                path,
                f"aspect ratio {width}x{height} ({ratio:,.0f}:1) exceeds IMSIM_MAX_ASPECT_RATIO="
                f"{self.limits.max_aspect_ratio:g} for {', '.join(keeping)}, which keep the aspect ratio "
                "(the model input would grow with it)",
            )

    def _prepare(self, file: FileBytes, times: StageTimes | None) -> _Prepared | ImageError:
        """One file → each model's uint8 input: decoded once per distinct JPEG draft scale, resized once per recipe."""
        try:
            with timed(times, "decode"):
                header = read_header(file.data, file.path, self.limits.max_pixels)
            by_scale: dict[int, list[str]] = {}
            for name, model in self.models.items():
                by_scale.setdefault(jpeg_draft_scale(header, model.preprocess.draft_size), []).append(name)
            arrays: dict[str, np.ndarray] = {}
            made: dict[tuple[Preprocess, int], np.ndarray] = {}
            width = height = 0
            for scale, names in by_scale.items():
                need = decode_memory(header, scale)
                self.budget.reserve(file.path, need)
                try:
                    with timed(times, "decode"):
                        size = self.models[names[0]].preprocess.draft_size if scale > 1 else None
                        image, width, height = decode_array(
                            file.data,
                            file.path,
                            min_size=size,
                            max_pixels=self.limits.max_pixels,
                            decoder=self.decoder,
                            header=header,
                        )
                    self._check_aspect(file.path, width, height)
                    arrays.update(self._inputs(image, scale, names, times, made))
                    del image
                finally:
                    self.budget.release(need)
            record = ImageRecord(
                path=file.path,
                sha256=file.sha256,
                file_size=file.file_size,
                mtime=file.mtime,
                width=width,
                height=height,
                file_version=file.file_version,
            )
            return _Prepared(record, arrays)
        except ImageError as exc:
            return exc
        except MemoryError:
            return ImageTooLarge(file.path, "out of memory while decoding or resizing")

    # --- slices: the models ------------------------------------------------------------------
    def _finish(self, futures: list[tuple[str | FileBytes, Future[_Outcome]]], times: StageTimes | None) -> Embedded:
        out = Embedded()
        prepared: list[_Prepared] = []
        for item, future in futures:
            outcome = future.result()
            if isinstance(outcome, ImageError):  # keyed by the path as given (byte-exact), not as the message prints it
                out.failures[item.path if isinstance(item, FileBytes) else absolute(item)] = outcome.reason
            elif isinstance(outcome, Skipped):
                out.skipped.append(outcome.path)
            elif isinstance(outcome, Restamp):
                out.restamp.append(outcome.facts)
            else:
                prepared.append(outcome)
        out.images = [p.record for p in prepared]
        for name, model in self.models.items():
            with timed(times, "embed", name):
                out.vectors[name] = embed_arrays(model, [p.arrays[name] for p in prepared])
        return out

    def stream(
        self, slices: Iterable[Sequence[str | FileBytes]], times: StageTimes | None = None, rule: SkipRule | None = None
    ) -> Iterator[Embedded]:
        """Embed slices of paths (or files already read) in order; the next slice is read and decoded on the pool
        while the models run on this one. ``rule`` leaves out files stored unchanged (``skipped``/``restamp``)."""
        window: deque[list[tuple[str | FileBytes, Future[_Outcome]]]] = deque()
        for items in slices:
            window.append([(item, self.fetcher.submit(item, rule, times)) for item in items])
            if len(window) > LOOKAHEAD:
                yield self._finish(window.popleft(), times)
        while window:
            yield self._finish(window.popleft(), times)

    def embed(self, items: Sequence[str | FileBytes], times: StageTimes | None = None) -> Embedded:
        """Read (where given paths) and embed everything, nothing stored: the eval's and the query side's way in."""
        total = Embedded(vectors={n: np.zeros((0, m.info.dim), np.float32) for n, m in self.models.items()})
        for part in self.stream((items[i : i + self.slice_size] for i in range(0, len(items), self.slice_size)), times):
            total.extend(part)
        return total

    def embed_paths(self, paths: Sequence[str], times: StageTimes | None = None) -> Embedded:
        return self.embed(list(paths), times)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.fetcher.close()
