"""Stage timings of the pipeline, typed: what each stage cost, in wall and CPU seconds.

:class:`StageTimes` is filled by :func:`timed` blocks in every stage (read, decode, resize, each model's
forward pass, each model's write) and read back by field, never by parsing a string key, in ingest, the
evaluation report and ``imsim bench``. Stages run on several threads at once, so ``seconds`` of a stage is
its busy time summed over threads (not a share of the wall clock) and ``cpu`` its thread CPU time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

Stage = Literal["read", "decode", "resize", "embed", "write", "wait"]
STAGES: tuple[Stage, ...] = ("read", "decode", "resize", "embed", "write", "wait")
PER_MODEL: frozenset[Stage] = frozenset({"embed", "write", "wait"})  # keyed: by model, or (wait) by what was waited for


@dataclass
class StageTimes:
    """Busy seconds (and thread CPU seconds) per stage; ``embed`` and ``write`` per model name; ``wait`` per thing waited
    on: ``lookup`` (pool threads waiting for the stored rows a skip check needs) and ``write`` (the pipeline waiting for
    the store to take a slice before it can go on): time the pipeline spends on the store's latency, not its own work."""

    read: float = 0.0
    decode: float = 0.0
    resize: float = 0.0
    embed: dict[str, float] = field(default_factory=dict)
    write: dict[str, float] = field(default_factory=dict)
    wait: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # stage -> CPU seconds (per-model stages summed)
    read_bytes: int = 0  # what the read stage read: file bytes
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: Stage, seconds: float, cpu: float = 0.0, model: str = "") -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        if (stage in PER_MODEL) != bool(model):
            raise ValueError(f"stage {stage!r} {'needs' if stage in PER_MODEL else 'takes no'} model name")
        with self._lock:
            if stage in PER_MODEL:
                per: dict[str, float] = getattr(self, stage)
                per[model] = per.get(model, 0.0) + seconds
            else:
                setattr(self, stage, getattr(self, stage) + seconds)
            self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu

    def count_read(self, size: int) -> None:
        with self._lock:
            self.read_bytes += size

    def merge(self, other: StageTimes) -> None:
        self.count_read(other.read_bytes)
        flat: tuple[Stage, ...] = ("read", "decode", "resize")
        for stage in flat:
            self.add(stage, getattr(other, stage), other.cpu.get(stage, 0.0))
        per_model: tuple[Stage, ...] = ("embed", "write", "wait")
        for stage in per_model:
            for model, seconds in getattr(other, stage).items():
                self.add(stage, seconds, 0.0, model)
            with self._lock:
                self.cpu[stage] = self.cpu.get(stage, 0.0) + other.cpu.get(stage, 0.0)

    def stage_seconds(self, stage: Stage) -> float:
        value = getattr(self, stage)
        return float(sum(value.values())) if isinstance(value, dict) else float(value)

    @property
    def total(self) -> float:
        return sum(self.stage_seconds(s) for s in STAGES)

    def rows(self) -> list[tuple[str, float, float]]:
        """(label, seconds, cpu seconds or nan) per stage, per model where it has models: for printing."""
        out: list[tuple[str, float, float]] = []
        for stage in STAGES:
            value = getattr(self, stage)
            if isinstance(value, dict):
                out += [(f"{stage} {model}", seconds, float("nan")) for model, seconds in value.items()]
            else:
                out.append((stage, value, self.cpu.get(stage, 0.0)))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": round(self.read, 4),
            "decode": round(self.decode, 4),
            "resize": round(self.resize, 4),
            "embed": {k: round(v, 4) for k, v in self.embed.items()},
            "write": {k: round(v, 4) for k, v in self.write.items()},
            "wait": {k: round(v, 4) for k, v in self.wait.items()},
            "cpu": {k: round(v, 4) for k, v in self.cpu.items()},
            "read_bytes": self.read_bytes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageTimes:
        return cls(
            read=float(data.get("read", 0.0)),
            decode=float(data.get("decode", 0.0)),
            resize=float(data.get("resize", 0.0)),
            embed=dict(data.get("embed", {})),
            write=dict(data.get("write", {})),
            wait=dict(data.get("wait", {})),
            cpu=dict(data.get("cpu", {})),
            read_bytes=int(data.get("read_bytes", 0)),
        )


@contextmanager
def timed(times: StageTimes | None, stage: Stage, model: str = "") -> Iterator[None]:
    """Add the wall and thread-CPU time of the block to ``times`` (``None``: time nothing)."""
    if times is None:
        yield
        return
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        times.add(stage, time.perf_counter() - wall, time.thread_time() - cpu, model)
