"""The registry audtrace runs share kernel audit through (tracer/audit_share.py)."""

from __future__ import annotations

import os

import pytest
from audtrace.tracer import audit_share


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "audtrace"
    monkeypatch.setattr(audit_share, "RUN_DIR", d)
    return d


def me() -> tuple[str, int]:
    return f"{os.getpid()}/1", audit_share.start_time(os.getpid())


def test_round_trip_and_the_last_one_out_removes_file_and_directory(run_dir):
    user, start = me()
    assert audit_share.load() == audit_share.Shared()
    audit_share.save(audit_share.Shared(0, {user: start}, {"-a always,exit -S kill": [user]}))
    assert (run_dir / "audit.json").exists()
    back = audit_share.load()
    assert back.restore_enabled == 0 and back.rules == {"-a always,exit -S kill": [user]}
    back.users.clear()
    audit_share.save(back)
    assert not run_dir.exists()


def test_runs_that_are_gone_are_forgotten(run_dir):
    user, start = me()
    reused = f"{os.getpid()}/2"          # same pid, another start time: not that run
    audit_share.save(audit_share.Shared(0, {user: start, reused: start + 1},
                                        {"r1": [reused], "r2": [reused, user]}))
    back = audit_share.load()
    assert list(back.users) == [user] and back.rules == {"r2": [user]}
    assert back.restore_enabled == 0
    # with nobody left, nothing is owed: the next run judges the flag afresh
    audit_share.save(audit_share.Shared(0, {user: start}, {}))
    lone = audit_share.load()
    lone.users[user] = start + 1
    lone.prune()
    assert lone == audit_share.Shared()


def test_an_unreadable_registry_counts_as_empty(run_dir):
    run_dir.mkdir()
    (run_dir / "audit.json").write_text("{not json")
    assert audit_share.load() == audit_share.Shared()


def test_the_mutex_is_exclusive_and_gives_up_after_its_timeout():
    with audit_share.locked() as first:
        assert first
        with audit_share.locked(timeout=0.05) as second:
            assert not second
    with audit_share.locked(timeout=0.05) as again:
        assert again
