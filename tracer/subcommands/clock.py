"""`audtrace clock`: who changed the time, and from what to what.

bpf/clock.c reports clock_settime, settimeofday, adjtimex and clock_adjtime calls that
modify the clock (adjtimex reads are left out in the kernel), and RTC_SET_TIME ioctls.
Records: SYSCALL; TIME_INJOFFSET as the kernel writes it when the call moved the clock
(`sec=` `nsec=`: for a setting, the new time less the time at entry, so it can exceed the
kernel's own by the microseconds between entry and the setting; for ADJ_SETOFFSET the
offset asked, exactly); a KERNEL_OTHER record `op="clock"` with the wall time before and
after the call, quoted "sec.nsec" (CLOCK_TAI read in the kernel at entry and exit, less the
TAI offset), what was asked (`asked=` time or offset, `modes=`, `rtc=`); PROCTITLE.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from audtrace.compat import ioctls
from audtrace.compat.record import Event, Record, enc_int, enc_str
from audtrace.compat.rules import Rule
from audtrace.tracer import declare
from audtrace.tracer.ebpf.events import Decoder, SyscallEvent
from audtrace.tracer.ebpf.probes import ProgramSpec
from audtrace.tracer.records import SRC, event_of, proctitle_record, syscall_record
from audtrace.tracer.session import Subcommand

SYSCALLS = ("clock_settime", "settimeofday", "adjtimex", "clock_adjtime", "ioctl")
# what a call asked for (bpf/clock.c's ASKED_*): a new time, an offset, or nothing (None)
ASKED_TIME, ASKED_OFFSET = "time", "offset"
NS = 1_000_000_000


@dataclass
class ClockDetail:
    before_ns: int          # wall time at entry
    after_ns: int           # wall time at exit
    asked: str | None       # ASKED_TIME, ASKED_OFFSET
    asked_ns: int           # the time or offset asked, in ns
    modes: int
    rtc: tuple[int, ...] | None


def tai_offset_ns() -> int:
    """CLOCK_TAI - CLOCK_REALTIME: whole seconds (37 with leap seconds set, else 0)."""
    diff = time.clock_gettime_ns(time.CLOCK_TAI) - time.clock_gettime_ns(time.CLOCK_REALTIME)
    return round(diff / NS) * NS


RTC_SET_TIME = ioctls.REQUESTS["RTC_SET_TIME"]


def program() -> ProgramSpec:
    return declare.program("clock.c", SYSCALLS, {"RTC_SET_TIME": f"{RTC_SET_TIME:#x}"})


def decode(d: Decoder, buf: bytes) -> SyscallEvent:
    h, who, extra = d.split(buf)
    ev = d.syscall(h, who)
    x = d.codec("family_extra").unpack_from(extra)
    off = tai_offset_ns()
    rtc = tuple(getattr(x, f"rtc_{i}") for i in range(9))
    asked = {d.const("ASKED_TIME"): ASKED_TIME, d.const("ASKED_OFFSET"): ASKED_OFFSET}
    ev.detail = ClockDetail(before_ns=x.tai_before - off, after_ns=x.tai_after - off,
                            asked=asked.get(x.asked), asked_ns=x.sec * NS + x.nsec,
                            modes=x.modes, rtc=rtc if x.has_rtc else None)
    return ev


def fmt_ns(ns: int) -> str:
    """Seconds with nine decimals, the sign in front: -0.5 s is -0.500000000."""
    sec, nsec = divmod(abs(ns), NS)
    return f"{'-' if ns < 0 else ''}{sec}.{nsec:09d}"


def injected_ns(ev: SyscallEvent) -> int | None:
    """What the kernel's TIME_INJOFFSET would say, or None when it writes none."""
    d: ClockDetail = ev.detail
    if ev.ret != 0 or not d.asked:
        return None
    delta = d.asked_ns - d.before_ns if d.asked == ASKED_TIME else d.asked_ns
    return delta or None


def rtc_text(rtc: tuple[int, ...]) -> str:
    sec, mnt, hour, mday, mon, year = rtc[:6]
    return f"{year + 1900:04d}-{mon + 1:02d}-{mday:02d}T{hour:02d}:{mnt:02d}:{sec:02d}"


def to_audit(ev: SyscallEvent, keys: list[str], serial: int) -> Event:
    d: ClockDetail = ev.detail
    records = [syscall_record(ev, keys)]
    inj = injected_ns(ev)
    if inj is not None:
        sec, nsec = divmod(inj, NS)
        records.append(Record("TIME_INJOFFSET", [("sec", enc_int(sec)), ("nsec", enc_int(nsec)),
                                                 SRC]))
    # "sec.nsec" is neither a decimal nor hex: unquoted, audit's parsers would take it for
    # hex text (laurel decodes an even-length run of digits so), so the times are quoted
    fields = [("op", enc_str("clock")), ("old", enc_str(fmt_ns(d.before_ns))),
              ("new", enc_str(fmt_ns(d.after_ns)))]
    if d.asked == ASKED_TIME:
        fields.append(("asked", enc_str(fmt_ns(d.asked_ns))))
    elif d.asked == ASKED_OFFSET:
        fields.append(("offset", enc_str(fmt_ns(d.asked_ns))))
    if d.modes:
        fields.append(("modes", f"0x{d.modes:x}"))
    if d.rtc is not None:
        fields.append(("rtc", enc_str(rtc_text(d.rtc))))
    records.append(Record("KERNEL_OTHER", [*fields, SRC]))
    records.append(proctitle_record(ev.who))
    return event_of(ev, records, serial)


def audit_rules(keys: list[str], arch: str = "b64") -> list[Rule]:
    """The classic time-change watch: `-S clock_settime -S settimeofday -S adjtimex
    -S clock_adjtime` plus `-S ioctl -F a1=0x4024700a`. Audit cannot tell an adjtimex read
    from a change (the modes are in memory): its side reports both."""
    return (declare.audit_rules(SYSCALLS[:-1], keys, arch=arch)
            + declare.audit_rules(["ioctl"], keys, arch=arch,
                                  a1=[RTC_SET_TIME]))


def subcommand(_req: None, keys: list[str]) -> Subcommand:
    return Subcommand(name="clock", program=program(), decode=decode, to_audit=to_audit,
                      audit_rules=audit_rules(keys))


@declare.command(subcommand)
def command(_common) -> None:
    """Who changed the time: settime calls, modifying adjtimex, RTC_SET_TIME."""
