"""Helpers the tests share: real servers and processes on free ports (``servers``), and the tiny-model settings (``settings``)."""
