"""Celery shell over imsim: ``celery -A workers worker`` starts a worker. The app is in :mod:`workers.app`."""

from .app import app

__all__ = ["app"]
