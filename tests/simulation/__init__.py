"""Helpers for the simulation tests: deliberately broken versions of the claim's private pieces."""
