from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from federation.errors import ServerError
from silo_node.policy import AuditLog
from silo_node.policy.audit import GENESIS

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def test_append_adds_time_and_chain_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    log = AuditLog(path, clock=FakeClock())
    log.append({"client_id": "gw-1", "released": [1, 2]})
    log.append({"client_id": "gw-2", "released": []})
    records = list(log.records())
    assert [r["client_id"] for r in records] == ["gw-1", "gw-2"]
    assert records[0]["prev"] == GENESIS
    assert records[1]["prev"] != GENESIS
    assert records[0]["time"] < records[1]["time"]
    assert log.verify() == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().endswith(b"\n")


def test_reopened_log_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append({"n": 1})
    reopened = AuditLog(path)
    reopened.append({"n": 2})
    assert reopened.verify() == 2
    assert [r["n"] for r in reopened.records()] == [1, 2]


def test_reserved_and_unserialisable_records_are_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="prev"):
        log.append({"prev": "x"})
    with pytest.raises(ValueError):
        log.append({"x": float("nan")})
    with pytest.raises(ValueError):
        log.append({"x": object()})
    assert log.verify() == 0


def test_edit_in_the_middle_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    for n in range(5):
        log.append({"client_id": "gw", "epsilon_spent": 1.0, "n": n})
    lines = _lines(path)
    record = json.loads(lines[2])
    record["epsilon_spent"] = 0.0  # someone hides a charge
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ServerError) as info:
        AuditLog(path).verify()
    assert info.value.code == "audit_corrupt"
    assert "line 4" in info.value.detail


def test_removed_record_in_the_middle_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    for n in range(4):
        log.append({"n": n})
    lines = _lines(path)
    del lines[1]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ServerError) as info:
        AuditLog(path).verify()
    assert info.value.code == "audit_corrupt"


def test_garbage_replacing_a_middle_record_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    for n in range(4):
        log.append({"n": n})
    lines = _lines(path)
    lines[1] = b"{not json"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ServerError):
        AuditLog(path).verify()


def test_torn_last_line_is_ignored_and_next_append_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    log.append({"n": 0})
    log.append({"n": 1})
    with path.open("ab") as handle:
        handle.write(b'{"client_id":"gw","n":2,"ti')  # the process died mid-write
    reopened = AuditLog(path)
    assert [r["n"] for r in reopened.records()] == [0, 1]
    assert reopened.verify() == 2
    reopened.append({"n": 3})
    assert [r["n"] for r in reopened.records()] == [0, 1, 3]
    assert reopened.verify() == 3
    lines = [line for line in _lines(path) if line]
    assert len(lines) == 4  # the torn fragment stays on its own line, for forensics
    assert lines[2].startswith(b'{"client_id":"gw","n":2')
    assert AuditLog(path).verify() == 3


def test_failed_write_leaves_the_log_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    log.append({"n": 0})
    real_write = os.write

    def torn_write(fd: int, data: bytes) -> int:
        real_write(fd, data[:7])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", torn_write)
    with pytest.raises(ServerError) as info:
        log.append({"n": 1})
    assert info.value.code == "audit_unavailable"
    monkeypatch.setattr(os, "write", real_write)
    log.append({"n": 2})
    assert [r["n"] for r in log.records()] == [0, 2]
    assert log.verify() == 2


def test_unwritable_location_is_a_server_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ServerError) as info:
        AuditLog(blocker / "audit.jsonl")
    assert info.value.code == "audit_unavailable"


def test_last_hash_is_found_across_read_blocks(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    for n in range(3):
        log.append({"n": n, "pad": "x" * 50_000})  # records larger than the 64 KiB read block
    with path.open("ab") as handle:
        handle.write(b"{" + b"y" * 70_000)
    reopened = AuditLog(path)
    reopened.append({"n": 3})
    assert reopened.verify() == 4


def test_concurrent_appends_keep_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")

    def worker(tid: int) -> None:
        for n in range(25):
            log.append({"tid": tid, "n": n})

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.verify() == 100
    assert sorted((r["tid"], r["n"]) for r in log.records()) == [(t, n) for t in range(4) for n in range(25)]


def test_empty_log_verifies(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    assert log.verify() == 0
    assert list(log.records()) == []
