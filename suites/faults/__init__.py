"""Acceptance suites: faults."""
