"""Orchestrator room: the CLI, run configuration, the run's life, monitoring, run files."""
