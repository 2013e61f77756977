"""Shared utilities of every stage: data formats (schema), resumable and atomic writes (stages), the dtype the
hardware computes fastest (hardware), model fingerprints (fingerprints), ranking and correlation metrics (metrics),
command error handling (cli_errors) and the paths of the installable models (embedded_models). Imports nothing
else of this repository."""
