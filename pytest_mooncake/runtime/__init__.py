"""Processes, readiness probes, network namespaces and the janitor."""
