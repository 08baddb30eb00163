"""The journal of what audtrace runs put in the kernel (tracer/audit/journal.py): which entries are
due to be undone given the runs alive, what is forgotten, the file and the mutex."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audtrace.compat.rules import Rule
from audtrace.tracer.audit import cleanup, journal
from audtrace.tracer.audit.journal import Held, Item, Journal

TRACEFS = "/sys/kernel/tracing"


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "audtrace"
    monkeypatch.setattr(journal, "RUN_DIR", d)
    return d


def rule(n: int) -> Held:
    return Held({"list": "exit", "action": "always", "syscalls": [n], "fields": []})


def two_runs() -> Journal:
    """Run A ("1/1" audit, "1/2" tracefs) and run B ("2/1" audit) at once: A turned audit on
    and added r1 and r2, B joined r2 and added r3; A mounted tracefs and B uses it."""
    return Journal(
        holders={"1/1": 10, "1/2": 10, "2/1": 20, "2/2": 20},
        audit=["1/1", "2/1"], restore_enabled=0,
        rules={"r1": Held(rule(1).what, ["1/1"]), "r2": Held(rule(2).what, ["1/1", "2/1"]),
               "r3": Held(rule(3).what, ["2/1"])},
        mounts={TRACEFS: Held({"fstype": "tracefs"}, ["1/2", "2/2"])})


def kinds(items: list[Item]) -> list[tuple[str, str]]:
    return [(i.kind, i.key) for i in items]


def test_nothing_is_due_while_every_run_lives():
    assert two_runs().due({"1/1", "1/2", "2/1", "2/2"}) == []


def test_a_dead_run_loses_only_what_no_live_run_shares():
    j = two_runs()
    live = {"2/1", "2/2"}                       # A was killed
    due = j.due(live)
    assert kinds(due) == [("rule", "r1")]       # r2 is B's too; the flag and tracefs B uses
    assert due[0].holders == ("1/1",)
    j.forget(live, due)
    assert j.holders == {"2/1": 20, "2/2": 20} and j.audit == ["2/1"]
    assert list(j.rules) == ["r2", "r3"] and j.rules["r2"].holders == ["2/1"]
    assert j.mounts[TRACEFS].holders == ["2/2"] and j.restore_enabled == 0


def test_with_no_live_run_everything_goes_newest_first_then_flag_then_mounts():
    j = two_runs()
    due = j.due(set())
    assert kinds(due) == [("rule", "r3"), ("rule", "r2"), ("rule", "r1"), ("enabled", ""),
                          ("mount", TRACEFS)]
    assert due[3].what == 0 and due[4].what == "tracefs"
    j.forget(set(), due)
    assert j.empty()


def test_the_flag_waits_for_the_last_audit_user_not_for_a_mount_user():
    j = two_runs()
    assert ("enabled", "") not in kinds(j.due({"2/1"}))
    assert ("enabled", "") in kinds(j.due({"1/2", "2/2"}))   # only tracefs users live
    j.restore_enabled = None                                 # audit was on before: no flag
    assert ("enabled", "") not in kinds(j.due(set()))


def test_an_undo_that_failed_stays_and_is_due_again():
    j = two_runs()
    due = j.due(set())
    j.forget(set(), [i for i in due if i.key != "r1"])      # r1 could not be removed
    assert j.holders == {} and list(j.rules) == ["r1"] and j.rules["r1"].holders == []
    assert kinds(j.due(set())) == [("rule", "r1")]
    assert j.due(set())[0].holders == ()


def test_merge_adds_a_holders_own_account():
    j = two_runs()
    mine = Journal(audit=["3/1"], restore_enabled=1,
                   rules={"r3": Held(rule(3).what, ["3/1"]), "r4": Held(rule(4).what, ["3/1"])})
    j.merge(mine)
    assert j.rules["r3"].holders == ["2/1", "3/1"] and j.rules["r4"].holders == ["3/1"]
    assert j.audit == ["1/1", "2/1", "3/1"] and j.restore_enabled == 0   # the first value
    lost = Journal()
    lost.merge(mine)
    assert lost.restore_enabled == 1 and list(lost.rules) == ["r3", "r4"]


def test_live_needs_the_same_pid_and_start_time_and_no_zombie():
    me = os.getpid()
    start = journal.start_time(me)
    assert start is not None
    # a child killed and not yet reaped is a zombie: dead, though /proc still has it
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child_start = journal.start_time(child.pid)
    child.kill()
    deadline = time.monotonic() + 10
    while journal.start_time(child.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    j = Journal(holders={f"{me}/1": start, f"{me}/2": start + 1,     # pid reused: not it
                         f"{child.pid}/1": child_start})
    assert j.live() == {f"{me}/1"}
    assert Path(f"/proc/{child.pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    child.wait()


def test_round_trip_and_an_empty_journal_removes_file_and_directory(run_dir):
    assert journal.load() == Journal()
    j = two_runs()
    journal.save(j)
    assert (run_dir / "journal.json").exists() and journal.load() == j
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    assert [p.name for p in run_dir.iterdir()] == ["journal.json"]   # no temporary left
    j.forget(set(), j.due(set()))
    journal.save(j)
    assert not run_dir.exists()


def test_an_unreadable_journal_is_empty_unless_strict(run_dir):
    run_dir.mkdir()
    (run_dir / "journal.json").write_text("{not json")
    assert journal.load() == Journal()
    with pytest.raises(OSError, match="cannot read"):
        journal.load(strict=True)


def test_a_mount_is_joined_only_when_audtrace_made_it(run_dir):
    me = f"{os.getpid()}/1"
    assert not journal.hold_mount(me, TRACEFS, "tracefs", join=True)
    assert not run_dir.exists()
    assert journal.hold_mount(me, TRACEFS, "tracefs", join=False)
    other = f"{os.getpid()}/2"
    assert journal.hold_mount(other, TRACEFS, "tracefs", join=True)
    j = journal.load()
    assert j.mounts[TRACEFS] == Held({"fstype": "tracefs"}, [me, other])
    assert set(j.holders) == {me, other}


def test_a_rule_is_kept_in_its_kernel_form():
    r = Rule(syscalls=[62, 200], fields=[("arch", "=", "b64"), ("a1", "=", 15),
                                         ("exit", "=", -1), ("key", "=", "k"),
                                         ("key", "=", "second")])
    j = Journal(rules={str(r): Held(cleanup.rule_what(r))})
    back = Journal.from_json(json.loads(json.dumps(j.to_json())))
    assert cleanup.rule_of(back.rules[str(r)].what) == r


def test_the_report_names_the_dead_run_and_not_the_one_leaving(monkeypatch):
    """settle() against mounts only (no audit socket needed): unmount is recorded, not done."""
    unmounted = []
    monkeypatch.setattr(cleanup, "is_mounted", lambda path, fstype: path != "/gone")
    monkeypatch.setattr(cleanup, "unmount", unmounted.append)
    me = f"{os.getpid()}/1"
    j = Journal(holders={me: journal.start_time(os.getpid())},
                mounts={"/a": Held({"fstype": "tracefs"}, ["999999999/1"]),
                        "/b": Held({"fstype": "tracefs"}, [me]),
                        "/gone": Held({"fstype": "tracefs"}, ["999999999/2"])})
    dry = cleanup.settle(j, dry_run=True)
    assert dry.summaries == ["would restore what run 999999999 (it ended without cleaning up)"
                             " left: unmount tracefs at /a"]
    assert unmounted == [] and len(j.mounts) == 3
    j.holders.pop(me)                       # this run leaves: its own mount goes silently
    report = cleanup.settle(j, quiet=me)
    assert report.summaries == ["restored what run 999999999 (it ended without cleaning up)"
                                " left: unmounted tracefs at /a"]
    assert report.failures == [] and sorted(unmounted) == ["/a", "/b"]
    assert j.empty()


def test_the_mutex_is_exclusive_and_gives_up_after_its_timeout():
    with journal.locked() as first:
        assert first
        with journal.locked(timeout=0.05) as second:
            assert not second
    with journal.locked(timeout=0.05) as again:
        assert again
