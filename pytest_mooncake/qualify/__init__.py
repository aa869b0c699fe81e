"""Scenarios, the cold/hit protocol, evaluation, capacity arithmetic, replay and traces."""
