"""Three replicas of ``examples/service.py`` as OS processes: kill the leader, pause the next,
and measure how long each takeover takes.

    python -m examples.takeover [--runs 5] [--lease 2] [--local] [--s3]

One run: start replica A and wait until it leads; start B and C (standbys); SIGKILL the leader
(the *kill takeover*: until another replica prints ``leading``); let the new leader apply a few
updates, SIGSTOP it (the *pause takeover*: until the third leads); let the third apply a few
updates, then SIGCONT the paused one, which must stop at once (fenced, or its lease lost by its
own clock); SIGTERM the third (it releases and exits). Times are taken from the replicas' own
``t=`` stamps (CLOCK_MONOTONIC, one clock for the machine) against the harness's clock at the
signal. ``tests/test_lead_processes.py`` runs the same scenario and checks the final state;
this module prints the medians over ``--runs`` runs, on a local folder and on a moto S3 server.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import anyio

from slate_epoch import ManifestStore, open_store
from slate_epoch.testing.servers import (
    TEST_ENVIRONMENT,
    UNSET_ENVIRONMENT,
    MotoServer,
    create_bucket,
)

SERVICE = Path(__file__).with_name("service.py")
ROOT = "service"
EVERY = 0.05  # seconds between a leader's updates
START_TIMEOUT = 60.0  # a busy 2-core machine takes seconds to start Python and import aiobotocore
WAIT_SLACK = 30.0  # added to every wait on a promised bound, before the harness gives up
_LINE = re.compile(r"^(?P<text>.*) t=(?P<t>[0-9.]+)$")


def environment() -> dict[str, str]:
    """The replicas' environment: dummy AWS credentials (moto), nothing that reaches AWS."""
    kept = {name: value for name, value in os.environ.items() if name not in UNSET_ENVIRONMENT}
    return {**kept, **TEST_ENVIRONMENT}


class Replica:
    """One ``service.py`` process; its output lines, each with the replica's ``t=`` stamp."""

    def __init__(self, name: str, url: str, lease: float, workdir: Path) -> None:
        self.name = name
        self._stderr_path = workdir / f"{name}.stderr"
        self._stderr: IO[bytes] = self._stderr_path.open("wb")
        command = [sys.executable, str(SERVICE), url, "--root", ROOT, "--owner", name]
        command += ["--lease", str(lease), "--every", str(EVERY)]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=environment(),
        )
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            match = _LINE.match(raw.rstrip("\n"))
            stamp, text = (float(match["t"]), match["text"]) if match else (time.monotonic(), raw)
            with self._changed:
                self.lines.append((stamp, text))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def first(self, prefix: str) -> tuple[float, str] | None:
        with self._changed:
            return next(((t, text) for t, text in self.lines if text.startswith(prefix)), None)

    def wait_for(self, prefix: str, timeout: float) -> tuple[float, str]:
        """The first line starting with ``prefix``; ``AssertionError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next(((t, x) for t, x in self.lines if x.startswith(prefix)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (not self._reader.is_alive() and self.process.poll() is not None):
                    raise AssertionError(f"{self.name}: no {prefix!r} line\n{self.describe()}")
                self._changed.wait(min(left, 0.5))

    def acks(self) -> list[str]:
        with self._changed:
            return [text.removeprefix("ack ") for _, text in self.lines if text.startswith("ack ")]

    def signal(self, number: signal.Signals) -> float:
        now = time.monotonic()
        self.process.send_signal(number)
        return now

    def wait_exit(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def describe(self) -> str:
        with self._changed:
            tail = "\n".join(f"  {t:.3f} {text}" for t, text in self.lines[-8:])
        errors = self._stderr_path.read_text(errors="replace")[-2000:]
        return f"{self.name} (exit {self.process.poll()}), last lines:\n{tail}\nstderr:\n{errors}"

    def close(self) -> None:
        """Stop the process if it still runs (by its PID), and release the pipes."""
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL ends a stopped process too
            self.process.wait(10.0)
        self._reader.join(10.0)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


@dataclass
class Run:
    """What one run saw. Times in seconds."""

    lease: float
    kill_takeover: float  # SIGKILL of the leader -> another replica leads
    pause_takeover: float  # SIGSTOP of the new leader -> the third leads
    stopped_after_resume: float  # SIGCONT -> the paused replica's "fenced"/"lost" line
    paused_for: float  # SIGSTOP -> SIGCONT
    killed: str
    paused: str
    third: str
    paused_exit: int
    paused_outcome: str  # its last line
    third_exit: int
    acks: dict[str, list[str]] = field(default_factory=dict)
    state: list[str] = field(default_factory=list)  # the final state's lines, in order


async def read_state(url: str) -> list[str]:
    async with open_store(url) as store:
        latest = await ManifestStore(store, ROOT).read_latest()
    return [] if latest is None else latest[1].state.decode().splitlines()


def run_once(url: str, lease: float, workdir: Path) -> Run:
    """One run of the scenario (see the module docstring) against the store at ``url``."""
    poll = renew = lease / 3
    workdir.mkdir(parents=True, exist_ok=True)
    replicas: dict[str, Replica] = {}

    def start(name: str) -> Replica:
        replicas[name] = Replica(name, url, lease, workdir)
        return replicas[name]

    def someone_leads(among: list[str], timeout: float) -> tuple[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in among:
                found = replicas[name].first("leading")
                if found is not None:
                    return name, found[0]
            time.sleep(0.01)
        details = "\n".join(replicas[name].describe() for name in among)
        raise AssertionError(f"none of {among} took over within {timeout:.1f} s\n{details}")

    def acked(replica: Replica, count: int) -> None:
        deadline = time.monotonic() + WAIT_SLACK
        while len(replica.acks()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{replica.name} acknowledged too little\n{replica.describe()}"
                )
            time.sleep(0.01)

    try:
        first = start("A")
        first.wait_for("leading", START_TIMEOUT)
        acked(first, 3)
        for name in ("B", "C"):
            start(name)
        for name in ("B", "C"):
            replicas[name].wait_for("waiting", START_TIMEOUT)
        time.sleep(lease)  # both standbys are watching the lease by now

        killed_at = first.signal(signal.SIGKILL)
        new_name, new_at = someone_leads(["B", "C"], lease + poll + WAIT_SLACK)
        new = replicas[new_name]
        acked(new, 3)

        third_name = "C" if new_name == "B" else "B"
        paused_at = new.signal(signal.SIGSTOP)
        _, third_at = someone_leads([third_name], lease + poll + renew + WAIT_SLACK)
        third = replicas[third_name]
        acked(third, 3)
        resumed_at = new.signal(signal.SIGCONT)
        paused_exit = new.wait_exit(renew + WAIT_SLACK)
        stopped_at, outcome = new.lines[-1]

        acked(third, len(third.acks()) + 3)
        third.signal(signal.SIGTERM)
        third_exit = third.wait_exit(lease + WAIT_SLACK)
        state = anyio.run(read_state, url, backend="asyncio")
        return Run(
            lease=lease,
            kill_takeover=new_at - killed_at,
            pause_takeover=third_at - paused_at,
            stopped_after_resume=stopped_at - resumed_at,
            paused_for=resumed_at - paused_at,
            killed="A",
            paused=new_name,
            third=third_name,
            paused_exit=paused_exit,
            paused_outcome=outcome,
            third_exit=third_exit,
            acks={name: replica.acks() for name, replica in replicas.items()},
            state=state,
        )
    finally:
        for replica in replicas.values():
            replica.close()


class S3Bucket:
    """A moto S3 server in a child process, and a fresh bucket on it: ``url(n)``."""

    def __init__(self, workdir: Path) -> None:
        self._server = MotoServer(workdir / "moto")

    def __enter__(self) -> Self:
        os.environ.update(TEST_ENVIRONMENT)  # for this process's own client (create_bucket)
        self._server.start()
        return self

    def url(self) -> str:
        endpoint = self._server.endpoint_url
        bucket = anyio.run(create_bucket, endpoint, backend="asyncio")
        return f"s3://{bucket}?endpoint_url={endpoint}"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()


def measure(
    name: str, new_url: Callable[[int], str], runs: int, lease: float, workdir: Path
) -> Mapping[str, float]:
    found: list[Run] = []
    for number in range(runs):
        run = run_once(new_url(number), lease, workdir / f"{name}-{number}")
        found.append(run)
        print(
            f"  {name} run {number + 1}: kill {run.kill_takeover:.3f} s, pause "
            f"{run.pause_takeover:.3f} s, resumed one stopped after "
            f"{run.stopped_after_resume * 1000:.1f} ms ({run.paused_outcome.split()[0]})",
            flush=True,
        )
    return {
        "kill": statistics.median(r.kill_takeover for r in found),
        "pause": statistics.median(r.pause_takeover for r in found),
        "stop": statistics.median(r.stopped_after_resume for r in found),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="runs per store (default: 5)")
    parser.add_argument("--lease", type=float, default=2.0, help="seconds (default: 2)")
    parser.add_argument("--local", action="store_true", help="only the local folder")
    parser.add_argument("--s3", action="store_true", help="only moto S3")
    args = parser.parse_args()
    stores = [s for s in ("local", "s3") if getattr(args, s)] or ["local", "s3"]
    lease: float = args.lease
    print(f"lease {lease:g} s, poll and renew every {lease / 3:.3g} s, {args.runs} runs each")
    results: dict[str, Mapping[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="slate-epoch-takeover-") as tmp:
        workdir = Path(tmp)
        if "local" in stores:
            results["local"] = measure(
                "local",
                lambda n: f"file://{workdir / 'local' / f'store-{n}'}",
                args.runs,
                lease,
                workdir / "local",
            )
        if "s3" in stores:
            with S3Bucket(workdir / "s3") as s3:
                results["s3"] = measure("s3", lambda n: s3.url(), args.runs, lease, workdir / "s3")
    print(f"\nmedians over {args.runs} runs, lease {lease:g} s:")
    print("| store | kill -> another leads | pause -> third leads | resumed one stops |")
    print("| --- | --- | --- | --- |")
    for store, medians in results.items():
        print(
            f"| {store} | {medians['kill']:.2f} s | {medians['pause']:.2f} s | "
            f"{medians['stop'] * 1000:.0f} ms |"
        )


if __name__ == "__main__":
    main()
