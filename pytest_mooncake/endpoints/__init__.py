"""vLLM instances (spawned or attached), serving topologies and the PD proxy."""
