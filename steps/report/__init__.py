"""Validation: evaluate exported models, measure latency, plot and render the report."""
