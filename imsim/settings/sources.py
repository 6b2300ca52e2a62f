"""Where settings come from besides keywords: ``IMSIM_*`` variables of the environment and of the env file
(``IMSIM_X=value`` lines), each family's fields nested under its name."""

from __future__ import annotations

import difflib
import io
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from ..errors import ConfigError
from .values import split_family_key

PREFIX = "IMSIM_"


class VariablesSource(PydanticBaseSettingsSource):
    """``IMSIM_*`` variables (the environment, or the env file) as settings values, family fields nested."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str], where: str):
        super().__init__(settings_cls)
        self.variables, self.where = variables, where

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read in __call__

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        families: dict[str, dict[str, Any]] = {}
        for key, value in self.variables.items():
            if not key.startswith(PREFIX) or key == PREFIX + "ENV_FILE":
                continue
            name = key[len(PREFIX) :].lower()
            if name in self.settings_cls.model_fields and name != "families":
                out[name] = value
            elif found := split_family_key(name):
                families.setdefault(found[0], {})[found[1]] = value
        if families:
            out["families"] = families
        return out


def read_env_file(path: Path, known: Collection[str]) -> dict[str, str]:
    """``IMSIM_X=value`` lines as python-dotenv reads them (``export``, quotes and escapes, ``#`` comments, inline ones
    after an unquoted value); a missing file is empty.

    A name that is not in ``known`` is an error naming the file and line: the file is imsim's own."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the env file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{where}: byte 0x{data[exc.start]:02x} is not UTF-8 (the env file is UTF-8 text); fix or remove that line"
        ) from None
    from dotenv.parser import parse_stream

    out: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):  # python-dotenv's parser: quotes, escapes, export, comments
        number, line = binding.original.line, binding.original.string.strip()
        if binding.key is None and not binding.error:
            continue  # a blank line or a comment
        if binding.error or binding.key is None or binding.value is None:
            raise ConfigError(f"{path}:{number}: not a KEY=value line: {line!r}")
        if not binding.key.startswith(PREFIX):
            continue
        if binding.key not in known:
            raise ConfigError(f"{path}:{number}: {binding.key} is not an imsim setting{did_you_mean(binding.key, known)}")
        out[binding.key] = binding.value
    return out


def did_you_mean(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
