"""Simulated nodes and fleets, and the demo."""
