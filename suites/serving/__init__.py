"""Acceptance suites: serving."""
