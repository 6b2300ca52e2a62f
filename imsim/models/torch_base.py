"""The torch runtime every torch family shares: device and precision, batching, OOM halving, and loading
Hugging Face checkpoints (with the hub reachability decided once per process).

Torch is imported inside functions only, so a family module (and its config class, which
:mod:`imsim.settings` reads) can be imported without it, as in a Celery parent process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelError
from .base import ModelInfo, Preprocess, Runtime, local_revision, no_text

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
HUB_PROBE_SECONDS = 3.0


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"IMSIM_DEVICE={device!r} but CUDA is not available in this process")
    return device


def torch_dtype(device: str, precision: str) -> Any:
    """fp16 on CUDA and fp32 on CPU unless IMSIM_PRECISION says otherwise."""
    import torch

    if precision == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether the model hub answers, decided once per process in at most ~3 s. ``HF_HUB_OFFLINE=1`` is honoured
    without a probe; an unreachable hub switches huggingface_hub to offline mode, so each load reads the local
    cache at once instead of retrying the network (which took ~46 s per command on an offline machine)."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return False
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    answered: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=HUB_PROBE_SECONDS).close()
            answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(HUB_PROBE_SECONDS + 0.5)
    if answered:
        return True
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    log.warning("the model hub (%s) is unreachable: models load from local directories and the local cache only", host)
    return False


def forward_threads() -> int:
    """Threads a CPU forward pass uses: ``OMP_NUM_THREADS`` when set, else every CPU this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))


def _threads_for_this_thread(n: int) -> None:
    """torch's intra-op thread count is an OpenMP setting of the calling thread: a thread that did not set it (a web
    server's batching thread, any thread of a caller's) runs a forward pass on one core (418 ms instead of 236 ms
    for DINOv2 B/14 here). Set it where the pass runs."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


class TorchEmbedder(ABC):
    """An :class:`~imsim.models.base.Embedder` running a torch module: families implement ``_forward_images``
    (normalised NCHW pixels → features) and, with a text tower, ``_forward_texts``."""

    info: ModelInfo
    preprocess: Preprocess
    device: str
    batch_size: int
    precision: str
    threads: int  # intra-op threads of a CPU forward pass (set in the thread that runs it)

    def __init__(self, runtime: Runtime):
        self.device = resolve_device(runtime.device)
        self.batch_size = runtime.batch_for(self.device)
        self.precision = runtime.precision
        self.threads = forward_threads()

    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self.device, self.precision)

    @abstractmethod
    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Model-specific: normalised NCHW pixels → (N, dim) unnormalised features."""

    def _forward_texts(self, texts: list[str]) -> torch.Tensor:
        raise no_text(self.info)

    def embed_uint8(self, batch: np.ndarray) -> np.ndarray:
        """Embed an NHWC uint8 batch already resized and cropped by :attr:`preprocess`.

        On CUDA the host batch is page-locked and copied asynchronously; the features stay on the device
        until the whole batch is done (one synchronisation). Out of GPU memory, the batch size halves."""
        import torch

        tensor = torch.as_tensor(np.ascontiguousarray(batch))
        if self.device == "cpu":
            _threads_for_this_thread(self.threads)
        if self.device.startswith("cuda") and not tensor.is_cuda:
            tensor = tensor.pin_memory()
        parts = []
        start = 0
        with torch.inference_mode():
            while start < tensor.shape[0]:
                part = tensor[start : start + self.batch_size]
                try:
                    pixels = self.preprocess.normalise(part.to(self.device, non_blocking=True), self.dtype)
                    features = self._forward_images(pixels)
                except torch.cuda.OutOfMemoryError:
                    if self.batch_size == 1:
                        raise
                    self.batch_size = max(1, self.batch_size // 2)  # stays lowered for later batches
                    log.warning("%s: out of GPU memory; batch size halved to %d", self.info.name, self.batch_size)
                    torch.cuda.empty_cache()
                    continue
                parts.append(torch.nn.functional.normalize(features.float(), dim=-1))
                start += part.shape[0]
            if not parts:
                return np.zeros((0, self.info.dim), np.float32)
            return torch.cat(parts).cpu().numpy().astype(np.float32, copy=False)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if self.device == "cpu":
            _threads_for_this_thread(self.threads)
        with torch.inference_mode():
            features = self._forward_texts(list(texts))
            return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)


class HFEmbedder(TorchEmbedder):
    """A family loaded with transformers' ``from_pretrained``: the model, its own image processor (the
    reference our :class:`~imsim.models.base.Preprocess` is tested against) and the pooling in use."""

    model: Any
    processor: Any
    pooling: str

    def _load_hf(
        self,
        model_class: Any,
        source: str,
        revision: str,
        what: str,
        *,
        pooling: str = "",
        poolings: Sequence[str] = (),
        **kwargs: Any,
    ) -> Any:
        """Check the pooling, ``from_pretrained`` the model and its image processor, move the model to the
        device, read the preprocessing recipe; returns the model."""
        if poolings and pooling not in poolings:
            raise ModelError(f"{what} pooling {pooling!r} is not one of {', '.join(poolings)}")
        self.pooling = pooling
        model, processor = load_pretrained(model_class, source, revision, self.dtype, what, **kwargs)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.preprocess = Preprocess.from_processor(processor)
        return model


def quiet_transformers() -> None:
    """No per-load progress bars or backend notices from transformers (our own logs say what loads)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def load_pretrained(
    model_cls: Any, source: str, revision: str, dtype: Any, what: str, *, processor: bool = True, **kwargs: Any
) -> tuple[Any, Any]:
    """``model_cls.from_pretrained`` (+ the image processor) from a hub id or local directory; a clear error naming both."""
    from transformers import AutoImageProcessor

    quiet_transformers()
    offline_hint = ""
    if not os.path.isdir(source) and not hub_reachable():
        offline_hint = (
            " (the model hub is unreachable from here and this model is not in the local cache: point the "
            "setting at a local directory holding the model)"
        )
    try:
        model = model_cls.from_pretrained(source, revision=revision, dtype=dtype, **kwargs)
        proc = AutoImageProcessor.from_pretrained(source, revision=revision) if processor else None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {what} model from {source!r} (revision {revision!r}): {exc}{offline_hint}") from exc
    return model, proc


def pinned_revision(model: Any, source: str, revision: str) -> tuple[str, str]:
    """(revision to record, revision that reloads exactly this model): a hub commit pins itself, a local
    directory is recorded by its content hash and reloaded from the same directory."""
    if os.path.isdir(source):
        return local_revision(source), revision
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    resolved = str(commit or revision)
    return resolved, resolved


def features_of(output: Any) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features; older versions a tensor."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output
