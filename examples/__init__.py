"""Examples: ``demo.py`` (``make demo``), ``service.py`` (a service that leads, run as one OS
process per replica) and ``takeover.py`` (runs three replicas of it, kills and pauses the
leader, and measures the takeovers: ``python -m examples.takeover``)."""
