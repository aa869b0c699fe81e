"""Acceptance suites: store."""
