"""The ``slate-epoch`` command line, tested as a user runs it: the installed console script in a
subprocess, against a local folder, against S3 (the session's moto server), against GCS (the
session's fake-gcs-server) and against Azure (the session's Azurite, its connection string in
the subprocess's environment).

Only the exit-code mapping and FencedError (which no command can provoke: the CLI never holds a
handle across commands) are tested in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from slate_epoch import (
    AccessDeniedError,
    BucketNotFoundError,
    ClaimTimeoutError,
    EpochHandle,
    FencedError,
    InvalidKeyError,
    ManifestCorruptError,
    ObjectStore,
    OperationTimeoutError,
    StoreUnreachableError,
    UnsupportedFormatError,
    UnsupportedStoreError,
    WriteOutcomeUnknownError,
    claim_epoch,
)
from slate_epoch import cli as cli_module
from slate_epoch.backends.local import LocalStore
from slate_epoch.cli import _commands as cli_commands
from slate_epoch.testing.servers import (
    TEST_ENVIRONMENT,
    UNSET_ENVIRONMENT,
    create_bucket,
    create_container,
    create_gcs_bucket,
)

RUN_TIMEOUT = 60.0  # per command; S3 ones import aiobotocore, Azure ones the Azure SDK
FIRST_MANIFEST = f"manifest/{1:020d}.manifest"

# The subprocess's environment: dummy AWS credentials, nothing that could reach real AWS, and no
# Azure account (an Azure test gives its own).
AZURE_ENVIRONMENT = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT")
ENVIRONMENT = {
    **{
        name: value
        for name, value in os.environ.items()
        if name not in UNSET_ENVIRONMENT and name not in AZURE_ENVIRONMENT
    },
    **TEST_ENVIRONMENT,
}

Result = subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def executable() -> str:
    """The installed console script, next to this interpreter."""
    found = shutil.which("slate-epoch", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.fail("no slate-epoch console script: reinstall with pip install -e '.[dev,s3,gcs]'")
    return found


@pytest.fixture
def cli(executable: str) -> Any:
    def run(*args: str, env: Mapping[str, str] | None = None) -> Result:
        """``slate-epoch *args``; ``env`` is added to the environment."""
        return subprocess.run(
            [executable, *args],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            env={**ENVIRONMENT, **(env or {})},
            cwd=tempfile.gettempdir(),  # not the checkout, as a user would run it
            check=False,
        )

    return run


def ok(result: Result) -> Result:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert result.stderr == ""
    return result


def ok_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def assert_error(result: Result, code: int, *fragments: str) -> str:
    """Exit ``code``, nothing on stdout, one line on stderr naming ``fragments``, no traceback."""
    assert result.returncode == code, f"exit {result.returncode}: {result.stderr}"
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("slate-epoch: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def claims_in_process(folder: Path, root: str, count: int) -> None:
    async def claim_all() -> None:
        async with LocalStore(folder) as store:
            for _ in range(count):
                await claim_epoch(store, root)

    anyio.run(claim_all, backend="asyncio")


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and folder under ``folder``: its mtime and (files) contents."""
    found: dict[str, tuple[int, bytes]] = {}
    for path in [folder, *folder.rglob("*")]:
        content = path.read_bytes() if path.is_file() else b"<dir>"
        found[str(path.relative_to(folder))] = (path.stat().st_mtime_ns, content)
    return found


def manifest_ids(folder: Path) -> list[int]:
    return sorted(int(path.name[:20]) for path in folder.glob("*.manifest"))


# -- local folder --------------------------------------------------------------------------------


def test_claim_inspect_and_history_on_a_local_folder(cli: Any, tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    assert "epoch 1 (manifest 1" in ok(cli("claim", url)).stdout
    second = ok_json(cli("claim", url, "--owner", "ops@bastion", "--json"))
    assert (second["role"], second["epoch"], second["manifest_id"]) == ("writer", 2, 2)
    assert second["owner"] == "ops@bastion"
    other = ok_json(cli("claim", url, "--role", "compactor", "--timeout", "30", "--json"))
    assert (other["role"], other["epoch"], other["manifest_id"]) == ("compactor", 1, 3)

    text = ok(cli("inspect", url)).stdout
    assert "latest id    3" in text
    writer_row = next(line for line in text.splitlines() if line.startswith("writer "))
    assert writer_row.split()[:3] == ["writer", "2", second["claim_id"]]
    assert writer_row.split()[-1] == "ops@bastion"

    inspected = ok_json(cli("inspect", url, "--json"))
    assert inspected["latest_id"] == 3
    assert inspected["gc_boundary"] == 0
    assert inspected["state_size"] == 0
    assert sorted(inspected["roles"]) == ["compactor", "writer"]
    writer = inspected["roles"]["writer"]
    assert (writer["epoch"], writer["owner"]) == (2, "ops@bastion")
    assert writer["claim_id"] == second["claim_id"]
    assert sorted(writer) == [
        "claim_id",
        "claimed_at",
        "claimed_at_ms",
        "epoch",
        "last_write_id",
        "owner",
    ]
    claimed_at = datetime.fromisoformat(writer["claimed_at"])
    assert claimed_at.tzinfo is not None
    assert abs(datetime.now(UTC) - claimed_at) < timedelta(minutes=5)
    assert inspected["roles"]["compactor"]["epoch"] == 1

    lines = ok(cli("history", url, "--limit", "2")).stdout.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["3", "2"]  # newest first
    assert lines[1].split()[1:3] == ["compactor=1", "writer=2"]
    assert "--limit 2" in lines[3]  # says there is more

    history = ok_json(cli("history", url, "--json"))
    assert [v["id"] for v in history["versions"]] == [3, 2, 1]
    assert [v["epochs"] for v in history["versions"]] == [
        {"compactor": 1, "writer": 2},
        {"writer": 2},
        {"writer": 1},
    ]
    assert history["versions"][1]["write_id"] == second["claim_id"]
    assert history["more"] is False


def test_gc_dry_run_changes_nothing_and_gc_deletes_below_the_boundary(
    cli: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "store"
    claims_in_process(folder, "app", 6)
    url = f"file://{folder}"

    before = snapshot(folder)
    planned = ok_json(cli("gc", url, "--root", "app", "--keep", "2", "--dry-run", "--json"))
    assert snapshot(folder) == before  # not one byte, not one mtime
    assert planned["dry_run"] is True
    assert (planned["latest_id"], planned["deleted"]) == (6, [1, 2, 3, 4])

    done = ok(cli("gc", url, "--root", "app", "--keep", "2")).stdout
    assert "deleted 4 manifest versions: 1-4" in done
    assert manifest_ids(folder / "app" / "manifest") == [5, 6]

    history = ok_json(cli("history", url, "--root", "app", "--json"))
    assert [v["id"] for v in history["versions"]] == [6, 5]
    assert (history["gc_boundary"], history["more"]) == (4, False)
    assert "(ids 1-4 were garbage-collected)" in ok(cli("history", url, "--root", "app")).stdout
    assert ok_json(cli("inspect", url, "--root", "app", "--json"))["gc_boundary"] == 4


# -- exit codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "argparse_error", "fragment"),
    [
        (["inspect", "{url}", "--bogus"], True, "unrecognized arguments: --bogus"),
        (["frobnicate", "{url}"], True, "invalid choice: 'frobnicate'"),
        (["gc", "{url}", "--keep", "0"], True, "must be at least 1"),
        (["inspect", "ftp://x"], False, "invalid URL: unsupported URL scheme 'ftp'"),
        (["claim", "file://relative/folder"], False, "invalid URL: file URL must be"),
        (["claim", "s3://AKID:s3cr3t@bucket/x"], False, "carries credentials"),
        (["claim", "gs://ya29.s3cr3t@bucket/x"], False, "carries credentials"),
        (["inspect", "gs://bucket/x?access_token=s3cr3t"], False, "carries credentials"),
        (["claim", "az://container/x?sv=2024-11-04&sp=rwdl&sig=s3cr3t"], False, "credentials"),
        (["inspect", "az://Bad_Container/x"], False, "invalid URL: invalid Azure container"),
        (["history", "{url}", "--root", "../x"], False, "InvalidKeyError"),
    ],
)
def test_usage_errors_exit_2(
    cli: Any, tmp_path: Path, args: list[str], argparse_error: bool, fragment: str
) -> None:
    result = cli(*(arg.format(url=f"file://{tmp_path}") for arg in args))
    if argparse_error:  # argparse's own: a usage line, then the error
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines()[-1].startswith("slate-epoch")
        assert fragment in result.stderr
    else:
        assert_error(result, 2, fragment)
    assert "s3cr3t" not in result.stderr


def test_nothing_there_exits_6(cli: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(cli("inspect", f"file://{empty}"), 6, "no manifest under")
    missing = tmp_path / "missing"
    assert_error(cli("history", f"file://{missing}", "--root", "app"), 6, "no folder")
    assert not missing.exists()  # a read command never creates the folder
    assert_error(cli("gc", f"file://{empty}", "--keep", "1", "--dry-run"), 6, "no manifest under")


def _unsupported_format() -> bytes:
    tail = (99).to_bytes(2, "big") + b"from the future"
    return b"SLEM" + zlib.crc32(tail).to_bytes(4, "big") + tail


@pytest.mark.parametrize(
    ("command", "content", "error"),
    [
        ("inspect", b"\x00garbage, not a manifest", "ManifestCorruptError"),
        ("claim", b"\x00garbage, not a manifest", "ManifestCorruptError"),
        ("history", _unsupported_format(), "UnsupportedFormatError"),
    ],
)
def test_corrupt_or_unsupported_manifest_exits_5(
    cli: Any, tmp_path: Path, command: str, content: bytes, error: str
) -> None:
    (tmp_path / "manifest").mkdir()
    (tmp_path / FIRST_MANIFEST).write_bytes(content)
    assert_error(cli(command, f"file://{tmp_path}"), 5, error, FIRST_MANIFEST)
    assert (tmp_path / FIRST_MANIFEST).read_bytes() == content  # left as it was


def test_debug_shows_the_traceback(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "manifest").mkdir()
    (tmp_path / FIRST_MANIFEST).write_bytes(b"garbage")
    result = cli("--debug", "inspect", f"file://{tmp_path}")
    assert result.returncode == 5
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("slate-epoch: error: ManifestCorruptError")


def test_claim_timeout_exits_3(cli: Any, tmp_path: Path) -> None:
    assert_error(cli("claim", f"file://{tmp_path}", "--timeout", "0"), 3, "ClaimTimeoutError")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (FencedError("writer", 1, 2), 4),
        (WriteOutcomeUnknownError("writer", 1, 2, write="update"), 4),
        (UnsupportedStoreError("check 'x' failed", check="x"), 7),
        (UnsupportedStoreError("501: conditional writes not implemented"), 7),
        (ClaimTimeoutError("claim timed out", attempts=1, last_error=None), 3),
        (OperationTimeoutError("update timed out", attempts=1, last_error=None), 3),
        (ManifestCorruptError("manifest/x", "checksum mismatch"), 5),
        (UnsupportedFormatError("manifest/x", 9, 1), 5),
        (InvalidKeyError("bad key"), 2),
        (BucketNotFoundError("no bucket"), 1),
        (AccessDeniedError("denied"), 1),
        (StoreUnreachableError("refused"), 1),
        (RuntimeError("a bug"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_exit_code_for_each_error(error: BaseException, code: int) -> None:
    assert cli_module.exit_code_for(error) == code


def test_fenced_exits_4_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No command can be fenced (each process claims afresh and holds nothing), so this runs
    ``main`` in-process with a claim that reports a fence."""

    async def fenced_claim(store: ObjectStore, root: str = "", **kwargs: Any) -> EpochHandle:
        raise FencedError("writer", 3, 4)

    monkeypatch.setattr(cli_commands, "claim_epoch", fenced_claim)
    assert cli_module.main(["claim", f"file://{tmp_path}"]) == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "slate-epoch: error: FencedError: role 'writer': epoch 3 is fenced by epoch 4\n"
    )


def test_python_dash_m_runs_the_cli_and_help_lists_the_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "slate_epoch", "--help"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=ENVIRONMENT,
        cwd=tempfile.gettempdir(),
        check=False,
    )
    assert ok(result).stdout.startswith("usage: slate-epoch")
    epilog = result.stdout[result.stdout.index("exit codes:") :]
    for code in range(8):
        assert f"\n  {code} " in epilog


# -- S3 (moto) -----------------------------------------------------------------------------------


def test_claim_inspect_gc_and_history_on_s3(cli: Any, s3_endpoint: str) -> None:
    bucket = anyio.run(create_bucket, s3_endpoint, backend="asyncio")
    url = f"s3://{bucket}/prod?endpoint_url={s3_endpoint}"
    assert "epoch 1 (manifest 1" in ok(cli("claim", url)).stdout
    assert ok_json(cli("claim", url, "--json"))["epoch"] == 2
    ok(cli("claim", url, "--root", "tenant-7"))  # another root: its own epochs

    inspected = ok_json(cli("inspect", url, "--json"))
    assert (inspected["latest_id"], inspected["roles"]["writer"]["epoch"]) == (2, 2)

    collected = ok_json(cli("gc", url, "--keep", "1", "--json"))
    assert (collected["deleted"], collected["gc_boundary"]) == ([1], 1)
    history = ok_json(cli("history", url, "--json"))
    assert [v["id"] for v in history["versions"]] == [2]
    assert history["more"] is False


def test_missing_s3_bucket_exits_1(cli: Any, s3_endpoint: str) -> None:
    url = f"s3://missing-{uuid.uuid4().hex}/prod?endpoint_url={s3_endpoint}"
    assert_error(cli("inspect", url), 1, "BucketNotFoundError")


@pytest.mark.parametrize("command", ["inspect", "history"])
def test_reads_retry_an_unreachable_store_until_their_timeout_then_exit_3(
    cli: Any, command: str
) -> None:
    """Nothing listens on port 9: every try is StoreUnreachableError (transient), retried until
    --timeout, then the timeout is reported, with the last error."""
    url = "s3://bucket/prod?endpoint_url=http://127.0.0.1:9&max_attempts=1&connect_timeout=0.2"
    line = assert_error(cli(command, url, "--timeout", "1.5"), 3, "timed out after 1.5 s")
    assert "StoreUnreachableError" in line


# -- GCS (fake-gcs-server) -------------------------------------------------------------------------


@pytest.fixture
def gcs_environment(gcs_endpoint: str) -> dict[str, str]:
    """The server named as Google's clients expect (the store then sends no credentials); no
    credential lookup that could leave this machine."""
    return {"STORAGE_EMULATOR_HOST": gcs_endpoint, "NO_GCE_CHECK": "true"}


def test_claim_inspect_gc_and_history_on_gcs(
    cli: Any, gcs_endpoint: str, gcs_environment: dict[str, str]
) -> None:
    bucket = anyio.run(create_gcs_bucket, gcs_endpoint, backend="asyncio")
    url = f"gs://{bucket}/prod"
    assert "epoch 1 (manifest 1" in ok(cli("claim", url, env=gcs_environment)).stdout
    assert ok_json(cli("claim", url, "--json", env=gcs_environment))["epoch"] == 2
    ok(cli("claim", url, "--root", "tenant-7", env=gcs_environment))  # another root

    inspected = ok_json(cli("inspect", url, "--json", env=gcs_environment))
    assert (inspected["latest_id"], inspected["roles"]["writer"]["epoch"]) == (2, 2)

    collected = ok_json(cli("gc", url, "--keep", "1", "--json", env=gcs_environment))
    assert (collected["deleted"], collected["gc_boundary"]) == ([1], 1)
    history = ok_json(cli("history", f"gcs://{bucket}/prod", "--json", env=gcs_environment))
    assert [v["id"] for v in history["versions"]] == [2]
    assert history["more"] is False


# -- Azure (Azurite) -----------------------------------------------------------------------------


def test_claim_inspect_gc_and_history_on_azure(cli: Any, azure_connection_string: str) -> None:
    container = anyio.run(create_container, azure_connection_string, backend="asyncio")
    env = {"AZURE_STORAGE_CONNECTION_STRING": azure_connection_string}
    url = f"az://{container}/prod"
    assert "epoch 1 (manifest 1" in ok(cli("claim", url, env=env)).stdout
    assert ok_json(cli("claim", url, "--json", env=env))["epoch"] == 2
    ok(cli("claim", f"azure://{container}/prod", "--root", "tenant-7", env=env))

    inspected = ok_json(cli("inspect", url, "--json", env=env))
    assert (inspected["latest_id"], inspected["roles"]["writer"]["epoch"]) == (2, 2)

    collected = ok_json(cli("gc", url, "--keep", "1", "--json", env=env))
    assert (collected["deleted"], collected["gc_boundary"]) == ([1], 1)
    history = ok_json(cli("history", url, "--json", env=env))
    assert [v["id"] for v in history["versions"]] == [2]
    assert history["more"] is False


def test_missing_gcs_bucket_exits_1(cli: Any, gcs_environment: dict[str, str]) -> None:
    url = f"gs://missing-{uuid.uuid4().hex}/prod"
    assert_error(cli("inspect", url, env=gcs_environment), 1, "BucketNotFoundError")


def test_missing_azure_container_exits_1(cli: Any, azure_connection_string: str) -> None:
    env = {"AZURE_STORAGE_CONNECTION_STRING": azure_connection_string}
    url = f"az://missing-{uuid.uuid4().hex}/prod"
    assert_error(cli("inspect", url, env=env), 1, "BucketNotFoundError", "container")


def test_azure_without_an_account_exits_1_and_says_what_to_set(cli: Any) -> None:
    line = assert_error(cli("inspect", "az://container/prod"), 1, "AccessDeniedError")
    assert "AZURE_STORAGE_CONNECTION_STRING" in line
