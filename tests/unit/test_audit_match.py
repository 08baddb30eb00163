"""Which multicast records a run relays: its rules judged as the kernel's exit filter does."""

from __future__ import annotations

import os

from audtrace.compat.record import Event, Record
from audtrace.compat.rules import Rule
from audtrace.tracer.audit.match import relay_filter, rule_matches
from audtrace.tracer.subcommands import kill

SYSCALL = ("arch=c000003e syscall=62 success=yes exit=0 a0=995 a1=f a2=0 a3=7f334ebb6ac0 "
           "items=0 ppid=2452 pid=2454 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 "
           'egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="kill" exe="/usr/bin/kill" '
           'key="theirs"')


def event(body: str, *more: Record) -> Event:
    return Event(1, 2, 3, [Record("SYSCALL", body=body), *more], "audit")


def fields(body: str) -> dict[str, str]:
    return dict(Record("SYSCALL", body=body).field_items())


def test_signal_argument_and_syscall_must_match():
    r15 = Rule(syscalls=[62, 200], fields=[("arch", "=", "b64"), ("a1", "=", 15)])
    r12 = Rule(syscalls=[62], fields=[("arch", "=", "b64"), ("a1", "=", 12)])
    assert rule_matches(r15, fields(SYSCALL))
    assert not rule_matches(r12, fields(SYSCALL))
    assert not rule_matches(r15, fields(SYSCALL.replace("syscall=62", "syscall=49")))
    b32 = Rule(syscalls=[62], fields=[("arch", "=", "b32"), ("a1", "=", 15)])
    assert not rule_matches(b32, fields(SYSCALL))


def test_operators_and_32_bit_argument_compare():
    assert rule_matches(Rule(syscalls=[62], fields=[("a3", "=", 0x4EBB6AC0)]),
                        fields(SYSCALL))
    assert rule_matches(Rule(syscalls=[62], fields=[("uid", "<", 1000)]), fields(SYSCALL))
    assert not rule_matches(Rule(syscalls=[62], fields=[("uid", ">=", 1000)]),
                            fields(SYSCALL))
    assert rule_matches(Rule(syscalls=[62], fields=[("a1", "&", 1)]), fields(SYSCALL))


def test_group_equal_may_be_a_supplementary_group():
    """The kernel matches `-F gid=N` (and egid) also on the task's supplementary groups, which
    the record does not list: a gid= rule cannot be refused on the record's gid; != can."""
    for name in ("gid", "egid"):
        assert rule_matches(Rule(syscalls=[62], fields=[(name, "=", 4242)]), fields(SYSCALL))
        assert not rule_matches(Rule(syscalls=[62], fields=[(name, "!=", 0)]), fields(SYSCALL))
    assert not rule_matches(Rule(syscalls=[62], fields=[("sgid", "=", 4242)]), fields(SYSCALL))


def test_relay_keeps_own_events_and_own_rule_changes_only():
    rules = kill.audit_rules([15], ["mine"])
    want = relay_filter(rules)
    assert want(event(SYSCALL))                      # another rule's key: still ours
    assert not want(event(SYSCALL.replace("a1=f", "a1=9")))
    me, other = str(os.getpid()), str(os.getpid() + 1)
    change = 'auid=0 ses=1 op=add_rule key="mine" list=4 res=1'
    assert want(Event(1, 2, 4, [Record("CONFIG_CHANGE", body=f"pid={me} {change}")], "audit"))
    assert not want(Event(1, 2, 5, [Record("CONFIG_CHANGE", body=f"pid={other} {change}")],
                          "audit"))
    assert not want(Event(1, 2, 6, [Record("USER_LOGIN", body="pid=1 uid=0")], "audit"))


def test_request_filters_apply_to_relayed_events():
    req = kill.KillRequest(signals=[15], comms=["kill"], target_comms=["sleep"])
    want = relay_filter(kill.audit_rules([15], []), kill.audit_filter(req))
    sleep = Record("OBJ_PID", body='opid=2453 oauid=-1 ouid=0 oses=-1 ocomm="sleep"')
    other = Record("OBJ_PID", body='opid=2453 oauid=-1 ouid=0 oses=-1 ocomm="7368656C6C"')
    assert want(event(SYSCALL, sleep))
    assert not want(event(SYSCALL, other))
    assert not want(event(SYSCALL.replace('comm="kill"', 'comm="bash"'), sleep))


def test_declared_record_types_are_relayed_through_the_request():
    abend = Event(1, 2, 7, [Record("ANOM_ABEND", body="auid=0 uid=0 pid=5 sig=6 res=1")],
                  "audit")
    assert not relay_filter([])(abend)
    assert relay_filter([], types=("ANOM_ABEND",))(abend)
    assert not relay_filter([], lambda ev: False, types=("ANOM_ABEND",))(abend)
