"""Acceptance suites: transfer."""
