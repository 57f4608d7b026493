"""Two writers on a local folder, a lost response, a fence: ``make demo``.

Writer A claims and writes; writer B's claim lands but its response is "lost" on the way back;
B still ends at exactly the next epoch, and A's next write is fenced and never lands.

``LOG_LEVEL=INFO make demo`` also shows slate-epoch's own log records (the library only logs;
configuring where records go, as here, is the application's business).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable

import anyio
import msgspec

from slate_epoch import FencedError, Manifest, claim_epoch, open_store
from slate_epoch.testing import FaultyStore


def step(text: str) -> None:
    print(f"- {text}")


def with_state(text: str) -> Callable[[Manifest], Manifest]:
    def mutate(manifest: Manifest) -> Manifest:
        return msgspec.structs.replace(manifest, state=text.encode())

    return mutate


async def main(folder: str) -> None:
    url = f"file://{folder}"
    print(f"store: {url}")
    # Two store objects over one folder: to the library they are two separate processes.
    async with open_store(url) as store_a, open_store(url) as store_b:
        a = await claim_epoch(store_a, owner="writer-A")
        step(f"A claims the writer role: epoch {a.epoch}, manifest {a.manifest_id}")
        await a.update(with_state("written by A"))
        step(f"A writes its state: manifest {a.manifest_id}")

        lossy = FaultyStore(store_b, seed=0)
        lossy.script("lost", op="create", prefix="manifest/")
        b = await claim_epoch(lossy, owner="writer-B")
        step(
            f"B claims; its write landed but the response was lost ({lossy.counts['lost']} lost): "
            f"B found its own claim id and holds epoch {b.epoch} at manifest {b.manifest_id} "
            "- one epoch up, none burned"
        )

        try:
            await a.update(with_state("A again, as a zombie"))
        except FencedError as exc:
            step(f"A tries to write again: FencedError ({exc})")
        else:  # pragma: no cover - the protocol forbids it
            sys.exit("A's write landed after B's claim: the fence failed")

        state = (await b.refresh()).state.decode()
        step(f"B reads the state: {state!r} (A's fenced write left no trace)")
        print("manifests in the folder:")
        async for meta in store_b.list("manifest/"):
            print(f"  {meta.key}  {meta.size} bytes")


if __name__ == "__main__":
    if "LOG_LEVEL" in os.environ:
        logging.basicConfig(
            level=os.environ["LOG_LEVEL"].upper(),
            format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        )
    if len(sys.argv) > 1:
        anyio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="slate-epoch-demo-") as tmp:
            anyio.run(main, tmp)
