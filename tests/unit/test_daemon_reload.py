"""The pure logic of a reload: the audit rule steps from the rules in force to the new ones
(first-match order kept, kept rules untouched), and the handoff that writes each syscall
two programs saw once."""

from __future__ import annotations

from audtrace.compat import rules as R
from audtrace.tracer.daemon import handoff, ruleset


def rule(text: str) -> R.Rule:
    return R.parse_args(text.split()).rule


KILL = rule("-a always,exit -F arch=b64 -S kill -k k")
TKILL = rule("-a always,exit -F arch=b64 -S tkill -k t")
KILL_NEVER = rule("-a never,exit -F arch=b64 -S kill -F a1=10")
OPEN = rule("-a always,exit -F arch=b64 -S openat -k o")


def test_unchanged_rules_are_not_touched_new_ones_appended_gone_ones_removed_last() -> None:
    assert ruleset.steps([KILL, TKILL], [KILL, OPEN]) == [("add", OPEN), ("remove", TKILL)]
    assert ruleset.steps([KILL], [KILL]) == []


def test_a_kept_rule_is_moved_when_a_new_rule_must_match_before_it() -> None:
    # never-for-SIGUSR1 must come before the kill rule, as in the new order: the kill rule
    # is taken out and appended again after it
    got = ruleset.steps([KILL, OPEN], [KILL_NEVER, KILL, OPEN])
    assert got == [("add", KILL_NEVER), ("move", KILL)]


def test_rules_that_cannot_meet_keep_their_place() -> None:
    assert ruleset.steps([OPEN], [KILL, OPEN]) == [("add", KILL)]
    assert not ruleset.can_meet(OPEN, KILL)
    assert ruleset.can_meet(KILL, KILL_NEVER)


def heads(events: dict[bytes, tuple[int, tuple]]):
    return lambda buf: events[buf]


def test_handoff_writes_each_syscall_both_programs_saw_once() -> None:
    ev = {b"o1": (1_000, ("t1", 1)), b"o2": (2_000, ("t2", 1)),
          b"n1": (1_500, ("t1", 1)), b"n3": (9_000, ("t3", 1)),
          b"n2": (2_000 + handoff.TOLERANCE_NS + 1, ("t2", 1))}
    h = handoff.Handoff(heads(ev), heads(ev))
    h.tap([b"o1"])
    assert h.screen([b"n1", b"n3"]) == []          # held one turn
    h.tap([b"o2"])                                 # o2's twin is too far apart in time
    assert h.screen([b"n2"]) == [b"n3"]            # n1 answered by o1
    assert h.finish() == [b"n2"]
    assert h.dropped == 1


def test_one_old_event_answers_for_one_new_event() -> None:
    ev = {b"o": (100, ("t", 1)), b"a": (100, ("t", 1)), b"b": (101, ("t", 1))}
    h = handoff.Handoff(heads(ev), heads(ev))
    h.tap([b"o"])
    h.screen([b"a", b"b"])
    assert h.finish() == [b"b"]


def test_stranded_counts_syscalls_neither_program_saw_whole() -> None:
    old = {1: (100, 0), 2: (100, 0), 3: (5_000, 0), 4: (100, 0)}
    new = {2: (100, 0)}
    # 1: began before the new program and it is not holding it; 2: the new one holds it;
    # 3: began after the new program was attached; 4: the thread is gone
    assert handoff.stranded(old, new, attached_ns=1_000, alive=lambda tid: tid != 4) == 1
