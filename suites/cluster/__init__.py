"""Acceptance suites: cluster."""
