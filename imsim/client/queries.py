"""Query images (paths, bytes or PIL images) → every model's vectors, through the ingest path: paths and bytes are
read and decoded exactly as ingest reads files (:class:`~imsim.embedding.EmbeddingStep`); a PIL image is made RGB
(EXIF orientation applied) and goes to each model's own preprocessing. A bad query is an error naming it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..embedding import EmbeddingStep
from ..errors import ImageDecodeError, ImageError, ImageNotFound, ImageTooLarge
from ..images import to_rgb_array
from ..models.base import embed_arrays
from ..sources.files import FileBytes
from ..sources.names import URL, is_uri
from ..sources.reading import read_file
from ..timing import StageTimes


def embed_queries(step: EmbeddingStep, queries: Sequence[Any], times: StageTimes | None = None) -> dict[str, np.ndarray]:
    """(len(queries), dim) vectors per model for query images given as paths, bytes or PIL images; a bad query
    raises its :class:`~imsim.errors.ImageError`. Paths and bytes take exactly the ingest path."""
    files: list[FileBytes] = []
    pils: dict[int, np.ndarray] = {}
    for i, query in enumerate(queries):
        if isinstance(query, Image.Image):
            if query.width < 1 or query.height < 1:
                raise ImageDecodeError(f"<query {i}: PIL image>", f"degenerate image size {query.width}x{query.height}")
            pils[i] = to_rgb_array(ImageOps.exif_transpose(query) or query)
        elif isinstance(query, (bytes, bytearray, memoryview)):
            data = bytes(query)
            if len(data) > step.limits.max_bytes:
                raise ImageTooLarge(
                    "<bytes>", f"{len(data):,} bytes, over the limit of {step.limits.max_bytes:,} (IMSIM_MAX_FILE_BYTES)"
                )
            files.append(FileBytes(path=f"<query {i}: bytes>", sha256="", file_size=len(data), mtime=0.0, data=data))
        elif isinstance(query, (str, os.PathLike)):
            if isinstance(query, str) and URL.match(query) and not is_uri(query):
                raise ImageNotFound(query, "a URL: queries are read from local files only; download the image first")
            files.append(read_file(query, step.limits))
        else:
            raise TypeError(f"a query image must be a path, bytes or PIL.Image, not {type(query).__name__}")
    embedded = step.embed(list(files), times)
    if embedded.failures:
        path, reason = next(iter(embedded.failures.items()))
        raise ImageError(path, reason)
    if not pils:
        return embedded.vectors
    from_files = iter(range(len(files)))
    order = [("pil", i) if i in pils else ("file", next(from_files)) for i in range(len(queries))]
    out = {}
    for name, model in step.models.items():
        arrays = {i: model.preprocess.to_uint8(im) for i, im in pils.items()}
        pil_vectors = dict(zip(arrays, embed_arrays(model, list(arrays.values())), strict=True))
        out[name] = np.stack([pil_vectors[i] if kind == "pil" else embedded.vectors[name][i] for kind, i in order])
    return out
