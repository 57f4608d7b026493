"""A service that leads: one OS process per replica, any number of replicas on one store.

    python examples/service.py URL [--root ROOT] [--owner NAME] [--lease SECONDS] [--every S]

While it leads, it applies numbered updates to the shared state - each appends the line
``NAME:N`` to the manifest's state through ``handle.update`` - and prints one line per update
that returned, so every line it prints is an acknowledged update. The lines, flushed at once,
each end with ``t=`` and the process's monotonic clock (on Linux and macOS the same clock for
every process on the machine)::

    waiting owner=NAME                    started; waiting to lead
    leading owner=NAME epoch=E            entered ``lead``
    ack NAME:N                            update N is in the state
    fenced owner=NAME: ...                a newer claim exists (exit 4)
    lost owner=NAME: ...                  the lease ran out or was taken (exit 7)
    stopped owner=NAME                    SIGTERM or SIGINT: released the role, exit 0

A replica that is fenced or loses its lease exits; its supervisor (systemd, Kubernetes, ...)
starts it again, and it waits as a standby. URL is any store URL (``file:///...``,
``s3://bucket/prefix?endpoint_url=...``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

import anyio
import msgspec

from slate_epoch import EpochHandle, FencedError, LeaseLostError, Manifest, lead, open_store

EXIT_FENCED = 4
EXIT_LOST = 7


def say(text: str) -> None:
    print(f"{text} t={time.monotonic():.6f}", flush=True)


async def serve(handle: EpochHandle, owner: str, every: float) -> None:
    """Apply updates 1, 2, 3, ... for as long as we lead (the body of ``lead``)."""
    number = 0
    while True:
        number += 1
        entry = f"{owner}:{number}\n".encode()

        def append(manifest: Manifest, entry: bytes = entry) -> Manifest:
            return msgspec.structs.replace(manifest, state=manifest.state + entry)

        await handle.update(append)
        say(f"ack {owner}:{number}")
        await anyio.sleep(every)


async def stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def main(args: argparse.Namespace) -> int:
    owner: str = args.owner or f"{socket.gethostname()}:{os.getpid()}"
    code = 0
    async with open_store(args.url) as store, anyio.create_task_group() as tasks:
        tasks.start_soon(stop_on_signal, tasks.cancel_scope)
        say(f"waiting owner={owner}")
        try:
            async with lead(store, args.root, lease=args.lease, owner=owner) as handle:
                say(f"leading owner={owner} epoch={handle.epoch}")
                await serve(handle, owner, args.every)
        except FencedError as exc:
            say(f"fenced owner={owner}: {exc}")
            code = EXIT_FENCED
        except LeaseLostError as exc:
            say(f"lost owner={owner}: {exc}")
            code = EXIT_LOST
        tasks.cancel_scope.cancel()
    if code == 0:
        say(f"stopped owner={owner}")
    return code


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A service that leads (slate-epoch example).")
    parser.add_argument("url", help="the store: file:///..., s3://bucket?endpoint_url=...")
    parser.add_argument("--root", default="service", help="root of the state (default: service)")
    parser.add_argument("--owner", default=None, help="this replica's name (default: host:pid)")
    parser.add_argument("--lease", type=float, default=10.0, help="seconds (default: 10)")
    parser.add_argument(
        "--every", type=float, default=0.05, help="seconds between updates (default: 0.05)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    # asyncio: the S3 store needs it (memory and local stores run on trio as well).
    sys.exit(anyio.run(main, parse(sys.argv[1:]), backend="asyncio"))
