"""Typed configuration: every knob imsim has, read from ``IMSIM_*`` environment variables.

This package is the one place where configuration is read. Everything else receives a
:class:`Settings` instance (or calls :func:`get_settings`) instead of reading the environment
itself, so a worker, the CLI and the Python client agree by construction.

Settings are the platform's own fields, declared by section in :mod:`.sections` (store, queue, models,
images, query, object storage, API), plus one config per model family, owned by the
family's module (:class:`~imsim.models.base.FamilyConfig`): field ``pooling`` of family ``dinov2``
is ``IMSIM_DINOV2_POOLING`` in the environment and ``dinov2_pooling=`` as a keyword. Values come
from, highest first: keywords (``Settings(...)``, ``Client(...)``), the environment, the env file
(``IMSIM_ENV_FILE``, default ``~/.imsim/imsim.env``: ``IMSIM_X=value`` lines, written e.g. by the
quickstart), then the defaults. Every value is validated, also in :meth:`Settings.replace`; an
unknown name is an error naming it. :mod:`.sources` reads the environment and the env file;
:mod:`.values` parses durations and weights and masks secrets in URLs.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SerializeAsAny, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .. import models as registry
from ..errors import ConfigError
from ..models.base import FamilyConfig, Runtime
from .sections import (
    DEFAULT_DATA_DIR,
    DEFAULT_ENV_FILE,
    SECTIONS,
    ApiSection,
    Consistency,
    Fusion,
    ImagesSection,
    ModelsSection,
    QuerySection,
    QueueSection,
    S3Section,
    StoreSection,
)
from .sources import PREFIX, VariablesSource, did_you_mean, read_env_file
from .values import API_FILE, SERVED_FILE, parse_duration, parse_weights, redact, served_api, served_store, split_family_key

__all__ = [
    "DEFAULT_DATA_DIR",
    "PREFIX",
    "SECTIONS",
    "API_FILE",
    "SERVED_FILE",
    "Consistency",
    "Fusion",
    "Settings",
    "get_settings",
    "known_variables",
    "load",
    "parse_duration",
    "parse_weights",
    "redact",
    "served_api",
    "served_store",
    "unknown_variables",
]


# The sections are listed last to first: pydantic orders the fields of bases from the last base to the first.
class Settings(ApiSection, S3Section, QuerySection, ImagesSection, ModelsSection, QueueSection, StoreSection, BaseSettings):
    """imsim settings; each field ``foo`` is read from ``IMSIM_FOO``; family fields from ``IMSIM_<FAMILY>_<FIELD>``.

    The platform's fields are declared by section (:mod:`imsim.settings.sections`); each family's by its module."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid", frozen=True)

    families: dict[str, SerializeAsAny[FamilyConfig]] = Field(
        default_factory=dict, description="Each model family's own settings (IMSIM_<FAMILY>_<FIELD>), from the family's module."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file = Path(os.environ.get(PREFIX + "ENV_FILE") or DEFAULT_ENV_FILE).expanduser()
        return (
            init_settings,
            VariablesSource(settings_cls, dict(os.environ), "the environment"),
            VariablesSource(settings_cls, read_env_file(file, set(known_variables())), str(file)),
        )

    @model_validator(mode="before")
    @classmethod
    def _family_configs(cls, data: Any) -> Any:
        """Fold ``family_field`` keys into each family's config and validate every family by its own class."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        raw: dict[str, dict[str, Any]] = {}
        for name, value in dict(data.pop("families", None) or {}).items():
            raw[name] = value.model_dump() if isinstance(value, FamilyConfig) else dict(value)
        for key in [k for k in data if k not in cls.model_fields]:
            found = split_family_key(key)
            if found:
                raw.setdefault(found[0], {})[found[1]] = data.pop(key)
        unknown = set(raw) - set(registry.names())
        if unknown:
            raise ValueError(f"unknown model famil{'ies' if len(unknown) > 1 else 'y'}: {', '.join(sorted(unknown))}")
        built: dict[str, FamilyConfig] = {}
        for name in registry.names():
            config_cls = registry.config_class(name)
            try:
                built[name] = config_cls.model_validate(raw.get(name, {}))
            except ValidationError as exc:
                raise ValueError("; ".join(_describe(err, name) for err in exc.errors())) from None
        data["families"] = built
        return data

    # --- derived -----------------------------------------------------------------------
    def family(self, name: str) -> FamilyConfig:
        """Family ``name``'s config (its defaults, for a family registered after these settings were made)."""
        if name in self.families:
            return self.families[name]
        return registry.config_class(name)()

    @property
    def served_api(self) -> dict[str, Any] | None:
        """With ``api_url`` unset: the running `imsim serve` of this data dir that serves this very store and embeds with
        these models (from ``DATA_DIR/api.json``): the CLI asks it, its models warm, instead of loading them."""
        if self.api_url:
            return None
        found = served_api(self.data_dir, self.resolved_milvus_uri)
        return found if found and list(found.get("models", [])) == self.model_names else None

    @property
    def resolved_api_url(self) -> str:
        """``IMSIM_API_URL``, else the running `imsim serve` of this data dir (:attr:`served_api`), else ''
        ('' too for ``off``)."""
        if self.api_url:
            return "" if self.api_url == "off" else self.api_url
        served = self.served_api
        return str(served["url"]) if served else ""

    @property
    def runtime(self) -> Runtime:
        return Runtime(
            device=self.device,
            batch_size=self.batch_size,
            cpu_batch_size=self.cpu_batch_size,
            precision=self.precision,
            cache_dir=self.data_dir / "models",
        )

    @model_validator(mode="after")
    def _check_weights(self) -> Settings:
        weights = parse_weights(self.fusion_weights)
        unknown = sorted(set(weights) - set(registry.names()))
        if unknown:
            raise ValueError(f"fusion_weights names {unknown[0]!r}, which is no model (known: {', '.join(registry.names())})")
        if weights and not any(w > 0 for n, w in weights.items() if n in self.model_names):
            raise ValueError(
                f"fusion_weights {self.fusion_weights!r} gives no positive weight to any of the models "
                f"{self.models!r}: weighted fusion would divide by zero"
            )
        return self

    # --- copies ------------------------------------------------------------------------
    def flat(self) -> dict[str, Any]:
        """Every setting under its keyword name (``clip_model`` ...), values as typed (secrets stay SecretStr)."""
        out = {name: getattr(self, name) for name in type(self).model_fields if name != "families"}
        for family, config in self.families.items():
            out.update({f"{family}_{key}": value for key, value in config.model_dump().items()})
        return out

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` (keyword names); an unknown name or a bad value is a :class:`ConfigError`."""
        return load({**self.flat(), **changes})


def known_variables() -> list[str]:
    """Every ``IMSIM_*`` variable imsim reads."""
    names = [PREFIX + n.upper() for n in Settings.model_fields if n != "families"]
    for family in registry.names():
        names += [f"{PREFIX}{family.upper()}_{f.upper()}" for f in registry.config_class(family).model_fields]
    return names


def unknown_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``IMSIM_*`` variables in the environment that are no setting, each with a hint (``imsim doctor`` reports them)."""
    known = set(known_variables())
    return {
        k: did_you_mean(k, known)
        for k in (environ if environ is not None else os.environ)
        if k.startswith(PREFIX) and k not in known
    }


def _describe(error: Any, family: str = "") -> str:
    """One pydantic error as ``IMSIM_NAME: message``."""
    loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
    if loc and loc[0] == "families":
        loc = loc[1:]
    name = "_".join([family, *loc] if family else loc)
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        keywords = [v[len(PREFIX) :].lower() for v in known_variables()]
        close = difflib.get_close_matches(name, keywords, n=1)
        return f"unknown setting {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    return f"{PREFIX}{name.upper()}: {message}" if name else message


def load(values: Mapping[str, Any] | None = None) -> Settings:
    """:class:`Settings` from keyword ``values`` over the environment and env file; errors as one :class:`ConfigError`."""
    try:
        return Settings(**dict(values or {}))
    except ValidationError as exc:
        raise ConfigError("invalid settings: " + "; ".join(_describe(e) for e in exc.errors())) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings read from the environment and the env file (cached)."""
    return load()
