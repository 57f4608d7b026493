"""``slate-epoch inspect`` shows each role's lease: the installed console script, run while a
``lead`` holds the role in this process and after it left (local folder, asyncio)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from slate_epoch import Backoff, claim_epoch, lead
from slate_epoch._lease import lease_key
from slate_epoch.backends.local import LocalStore
from slate_epoch.cli import EXIT_CORRUPT

pytestmark = pytest.mark.anyio
ROOT = "app"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def inspect(folder: Path, *options: str) -> tuple[int, str, str]:
    executable = shutil.which("slate-epoch", path=os.path.dirname(sys.executable))
    assert executable is not None, "no slate-epoch console script: pip install -e '.[dev,s3]'"
    done = await anyio.run_process(
        [executable, "inspect", f"file://{folder}", "--root", ROOT, *options],
        check=False,
        cwd=tempfile.gettempdir(),
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def lease_row(text: str, role: str) -> list[str]:
    tables = text.split("\n\n")
    assert tables[-1].startswith("ROLE    LEASE"), text
    return next(line.split() for line in tables[-1].splitlines() if line.startswith(f"{role} "))


async def test_inspect_shows_the_lease_held_then_released(tmp_path: Path) -> None:
    async with LocalStore(tmp_path) as store:
        await claim_epoch(store, ROOT, role="compactor")  # a role without a lease
        backoff = Backoff(maximum=0.05)
        async with lead(
            store, ROOT, owner="replica-1", lease=5.0, renew_every=0.2, backoff=backoff
        ) as handle:
            await anyio.sleep(0.7)  # a few renewals
            code, text, errors = await inspect(tmp_path)
            assert (code, errors) == (0, "")
            held = lease_row(text, "writer")
            assert held[:4] == ["writer", "held", str(handle.epoch), "replica-1"]
            assert int(held[4]) >= 2
            assert held[-1] == "5"
            assert not any(
                line.startswith("compactor ") for line in text.split("\n\n")[-1].splitlines()
            )

        code, text, errors = await inspect(tmp_path, "--json")
        assert (code, errors) == (0, "")
        leases: dict[str, Any] = json.loads(text)["leases"]
        assert leases["compactor"] is None  # claimed without lead()
        left = leases["writer"]
        assert (left["state"], left["released"], left["owner"]) == ("released", True, "replica-1")
        assert left["renewals"] >= 2
        assert left["lease_seconds"] == 5.0
        assert left["renewed_at"].endswith("Z")

        await claim_epoch(store, ROOT, owner="operator")  # a plain claim: the lease is older
        code, text, _ = await inspect(tmp_path)
        assert lease_row(text, "writer")[:3] == ["writer", "older", str(handle.epoch)]


async def test_inspect_reports_a_corrupt_lease_naming_its_key(tmp_path: Path) -> None:
    async with LocalStore(tmp_path) as store:
        await claim_epoch(store, ROOT)
        await store.put(lease_key(ROOT, "writer"), b"not a lease")
    code, text, errors = await inspect(tmp_path)
    assert (code, text) == (EXIT_CORRUPT, "")
    assert "LeaseCorruptError" in errors
    assert lease_key(ROOT, "writer") in errors
