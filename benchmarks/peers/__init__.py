"""Peer benchmarks, each run as ``python -m benchmarks.peers.<name>`` in its own process.

Every script prints one line ``BENCH-RESULT {json}`` (see ``_common.emit``): samples in seconds
by temperature, requests per operation where known, the peer's version and what it does. A
peer whose package is missing reports itself unavailable instead of failing. This package
imports nothing heavy, so a script pays only for what it measures.
"""
