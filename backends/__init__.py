"""Object-store backends: ``memory``, ``local`` and ``s3``, each importable on its own.

Each backend imports only the store protocol and the errors, and translates its native errors
into ``slate_epoch`` errors at its own edge.
"""
