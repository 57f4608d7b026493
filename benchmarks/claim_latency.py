"""What an uncontended claim costs, and whether it grows with history: now two scenarios of
the harness. ``python -m benchmarks.claim_latency [--quick] [--out DIR]`` runs just those
(``python -m benchmarks --only uncontended,history``); see ``benchmarks/__main__.py``.
"""

from __future__ import annotations

import sys

from .__main__ import main

if __name__ == "__main__":
    sys.exit(main(["--only", "uncontended,history", *sys.argv[1:]]))
