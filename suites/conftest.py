"""Shared helpers of the acceptance suites (the plugin provides the fixtures)."""
