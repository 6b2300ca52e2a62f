"""The vocabulary's requests as the HTTP doors take them: each a model of :mod:`imsim.vocabulary` plus what only HTTP has
(an uploaded file, the query text in a query string), read whole by FastAPI (a query, form or body parameter model) so
no field is declared twice. Unknown parameters are refused (422), never ignored."""

from __future__ import annotations

from typing import Literal

from fastapi import UploadFile
from pydantic import Field

from ..vocabulary import DuplicatesOptions, Model, SearchOptions


class ImageSearch(SearchOptions):
    """Search by an uploaded image (multipart form)."""

    image: UploadFile = Field(description="The query image.")


class TextSearch(SearchOptions):
    """Search by text (models with a text tower)."""

    text: str = Field(min_length=1, max_length=1000, description="The words to search by.")


class LikeSearch(SearchOptions):
    """Search like a stored image: its stored vectors, nothing re-embedded."""

    like: str = Field(min_length=1, max_length=4096, description="A stored image's row id (or its path).")


class CompareForm(Model):
    a: UploadFile = Field(description="One image.")
    b: UploadFile = Field(description="The other image.")
    models: str = Field("", description="Comma-separated model names (default: IMSIM_MODELS).")


class DuplicatesQuery(DuplicatesOptions):
    refresh: bool = Field(False, description="Link the pairs again instead of reusing the ones computed for this query.")


class Page(Model):
    offset: int = Field(0, ge=0, description="Items to skip.")
    limit: int = Field(20, ge=0, le=1000, description="Items per page.")


class ExactQuery(Page):
    under: str = Field("", max_length=4096, description="Only images under this folder.")


class DecisionsQuery(Model):
    format: Literal["csv", "json"] = Field("csv", description="csv (a header, then one row per image) or json (JSON lines).")


class Recent(Model):
    limit: int = Field(20, ge=1, le=200, description="How many recent jobs.")


class Thumbnail(Model):
    size: int = Field(256, ge=16, le=1024, description="Longest side, in pixels.")
