"""Normalized events -> audit records: shapes, order and encodings of the kernel's records."""

from __future__ import annotations

import dataclasses

from audtrace.compat.record import format_raw, split_fields
from audtrace.tracer import records as audit_records
from audtrace.tracer.ebpf.events import Identity, KernelSignal, SyscallEvent, Target

# what the kernel wrote for `/bin/kill -15 2453` (captured over netlink on a dev machine)
KERNEL_SYSCALL = (
    "arch=c000003e syscall=62 success=yes exit=0 a0=995 a1=f a2=0 a3=7f334ebb6ac0 items=0 "
    "ppid=2452 pid=2454 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 "
    "fsgid=0 tty=(none) ses=4294967295 comm=\"kill\" exe=\"/usr/bin/kill\" key=\"audtest\"")
KERNEL_OBJ_PID = 'opid=2453 oauid=-1 ouid=0 oses=-1 ocomm="sleep"'
KERNEL_PROCTITLE = "proctitle=2F62696E2F6B696C6C002D31350032343533"

WHO = Identity(pid=2454, ppid=2452, auid=0xFFFFFFFF, ses=0xFFFFFFFF, uid=0, gid=0,
               euid=0, suid=0, fsuid=0, egid=0, sgid=0, fsgid=0, comm=b"kill", tty=None,
               exe=b"/usr/bin/kill", proctitle=b"/bin/kill\0-15\x002453")
SLEEP = Target(pid=2453, auid=0xFFFFFFFF, uid=0, ses=0xFFFFFFFF, comm=b"sleep")
EV = SyscallEvent(time_ns=1795314827_113_456_789, arch=0xC000003E, nr=62,
                  args=(0x995, 15, 0, 0x7F334EBB6AC0), ret=0, who=WHO, targets=[SLEEP])


def without_src(body: str) -> str:
    return " ".join(f"{k}={v}" for k, v in split_fields(body) if k != "src")


def test_event_reproduces_the_kernels_records():
    ev = audit_records.syscall_event(EV, ["audtest"], serial=7)
    lines = format_raw(ev).splitlines()
    assert [line.split()[0] for line in lines] == ["type=SYSCALL", "type=OBJ_PID",
                                                   "type=PROCTITLE"]
    bodies = [line.split("): ", 1)[1] for line in lines]
    assert without_src(bodies[0]) == KERNEL_SYSCALL
    assert without_src(bodies[1]) == KERNEL_OBJ_PID
    assert without_src(bodies[2]) == KERNEL_PROCTITLE
    assert all(line.endswith(" src=ebpf") for line in lines)
    assert lines[0].startswith("type=SYSCALL msg=audit(1795314827.113:7): ")


def test_failure_and_no_key():
    failed = SyscallEvent(**{**{f: getattr(EV, f) for f in EV.__slots__}, "ret": -1})
    fields = dict(audit_records.syscall_record(failed, []).fields)
    assert fields["success"] == "no" and fields["exit"] == "-1"
    assert fields["key"] == "(null)"


def test_several_keys_travel_hex_encoded_with_0x01():
    fields = dict(audit_records.syscall_record(EV, ["a", "b"]).fields)
    assert bytes.fromhex(fields["key"]) == b"a\x01b"


def test_untrusted_strings_are_hex():
    who = dataclasses.replace(WHO, comm=b'my "x"', tty="pts3", exe=None)
    ev = dataclasses.replace(EV, who=who)
    fields = dict(audit_records.syscall_record(ev, []).fields)
    assert bytes.fromhex(fields["comm"]) == b'my "x"'
    assert fields["tty"] == "pts3" and fields["exe"] == "(null)"


def test_kernel_signal_names_context_and_victim():
    ks = KernelSignal(time_ns=1795314827_000_000_000, sig=11, si_code=1, result=0, group=False,
                      context=WHO, victim=SLEEP)
    generated, received = audit_records.kernel_signal_events(ks, [], serial=9)
    (rec,) = generated.records
    fields = dict(rec.fields)
    msg = dict(split_fields(fields["msg"].strip("'")))
    assert rec.type == "USER" and generated.serial == 9
    assert fields["pid"] == "2454" and msg["opid"] == "2453" and msg["sig"] == "11"
    assert msg["op"] == "signal-generate" and rec.fields[-1] == ("src", "ebpf")
    # the victim's side, findable by its own pid
    victim = dict(received.records[0].fields)
    assert victim["pid"] == "2453"
    assert dict(split_fields(victim["msg"].strip("'")))["spid"] == "2454"


def test_a_crash_is_one_record():
    ks = KernelSignal(time_ns=1795314827_000_000_000, sig=11, si_code=1, result=0, group=False,
                      context=WHO, victim=Target(pid=WHO.pid, auid=0, uid=0, ses=1,
                                                 comm=b"kill"))
    assert len(audit_records.kernel_signal_events(ks, [], serial=9)) == 1
