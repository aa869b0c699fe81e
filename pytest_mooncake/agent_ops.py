"""Agent operations the suites run next to the store (no per-call socket round trip)."""

from __future__ import annotations

from .agent import op  # noqa: F401 - the decorator that registers an operation
