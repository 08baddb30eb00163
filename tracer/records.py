"""Normalized events -> audit records, in the kernel's own record shapes and field order.

Field order and encodings follow what the kernel writes (kernel/auditsc.c, kernel/audit.c;
tests/integration/test_ausearch_format.py holds them against ausearch): ausearch finds
fields by sequential search, so order matters as much as spelling.
Every record audtrace makes ends with `src=ebpf`; the session numbers the events
(tracer/serials.py).
"""

from __future__ import annotations

from audtrace.compat.ints import s32
from audtrace.compat.record import Event, Record, Run, SyscallRecord, enc_int, enc_str
from audtrace.compat.rules import KEY_SEP
from audtrace.tracer.ebpf.events import FileInfo, Identity, KernelSignal, SyscallEvent, Target

SRC = ("src", "ebpf")
UNSET = 0xFFFFFFFF


def enc_own_int(value: int) -> str:
    """A number in a field the audit tools do not know (audtrace's own): quoted. Unquoted,
    laurel reads an unknown field's even run of digits as hex text (netns=4026531840 would
    become 4 bytes of garbage); known numeric names (pid, uid, inode, lport...) stay bare."""
    return enc_str(str(value))


_KEYS: dict[tuple[str, ...], str] = {}


def enc_key(keys: list[str] | tuple[str, ...]) -> str:
    """key= as audit writes it; worked out once per set of keys."""
    t = tuple(keys)
    text = _KEYS.get(t)
    if text is None:
        # several keys travel as one string separated by \x01, which forces the hex form
        text = _KEYS[t] = enc_str(KEY_SEP.join(t)) if t else "(null)"
    return text


def identity_fields(who: Identity) -> list[tuple[str, str]]:
    return [
        ("ppid", enc_int(who.ppid)), ("pid", enc_int(who.pid)),
        ("auid", enc_int(who.auid)), ("uid", enc_int(who.uid)), ("gid", enc_int(who.gid)),
        ("euid", enc_int(who.euid)), ("suid", enc_int(who.suid)),
        ("fsuid", enc_int(who.fsuid)), ("egid", enc_int(who.egid)),
        ("sgid", enc_int(who.sgid)), ("fsgid", enc_int(who.fsgid)),
        ("tty", who.tty or "(none)"), ("ses", enc_int(who.ses)),
        ("comm", enc_str(who.comm)), ("exe", enc_str(who.exe) if who.exe else "(null)"),
    ]


def identity_run(who: Identity) -> Run:
    """The caller's SYSCALL fields, made once per identity."""
    run = who.memo.get("run")
    if run is None:
        run = who.memo["run"] = Run(identity_fields(who))
    return run


def syscall_record(ev: SyscallEvent, keys: list[str], items: int = 0, *,
                   result: str = "is_err", after: tuple[tuple[str, str], ...] = ()) -> Record:
    """SYSCALL in the kernel's field order. `result`: "is_err" (success= as the kernel
    judges it: failed when exit is an errno, IS_ERR_VALUE; a negative offset or address is
    a success) or "none" for a call that never returns (no success=, no exit=).
    `after`: fields after key= (before src=ebpf)."""
    success = None if result == "none" else "no" if -4095 <= ev.ret <= -1 else "yes"
    return SyscallRecord(ev.arch, ev.nr, success, ev.ret, ev.args, items, identity_run(ev.who),
                         enc_key(keys), after)


def obj_pid_record(t: Target) -> Record:
    rec = t.memo.get("obj_pid")
    if rec is None:
        fields = [("opid", enc_int(t.pid)), ("oauid", enc_int(s32(t.auid))),
                  ("ouid", enc_int(s32(t.uid))), ("oses", enc_int(s32(t.ses))),
                  ("ocomm", enc_str(t.comm)), SRC]
        rec = t.memo["obj_pid"] = Record("OBJ_PID", fields, shared=True)
    return rec


def proctitle_record(who: Identity) -> Record:
    rec = who.memo.get("proctitle")
    if rec is None:
        rec = who.memo["proctitle"] = Record(
            "PROCTITLE", [("proctitle", enc_str(who.proctitle or who.comm)), SRC], shared=True)
    return rec


# auditd's own record for its trouble; ausearch reads it like any daemon record
LOSS_TYPE = "DAEMON_ERR"


def loss_event(source: str, lost: int, total: int, time_ns: int) -> Event:
    """`lost` events of `source` (ebpf, audit, or the log itself) not written, `total` so
    far: an event of its own in the stream, never a silent gap. Serial 0: the stream
    numbers it as it is written."""
    sec, nsec = divmod(time_ns, 1_000_000_000)
    rec = Record(LOSS_TYPE, [("op", enc_str("lost-events")), ("source", enc_str(source)),
                             ("lost", enc_own_int(lost)), ("total", enc_own_int(total)),
                             ("res", "failed"), SRC])
    return Event(sec, nsec // 1_000_000, 0, [rec], "ebpf")


def syscall_event(ev: SyscallEvent, keys: list[str], serial: int) -> Event:
    records = [syscall_record(ev, keys)]
    records += [obj_pid_record(t) for t in ev.targets]
    records.append(proctitle_record(ev.who))
    sec, nsec = divmod(ev.time_ns, 1_000_000_000)
    return Event(sec, nsec // 1_000_000, serial, records, "ebpf")


def kernel_signal_events(ev: KernelSignal, keys: list[str], serial: int) -> list[Event]:
    """A signal no syscall sent, as USER records: no SYSCALL is invented for it.

    pid=, uid=, auid=, ses= are the task in whose context the kernel generated the signal;
    the victim is the object inside msg. When the two differ (an OOM kill, a tty's SIGINT)
    a second record tells the victim's side, so `ausearch -p` finds it by either pid.
    (Measured: ausearch reads a user record's pid/uid/auid/ses and its msg; a field ending
    in "uid=" after ses breaks -ui/-ua, so the victim's uids stay out.)"""
    sec, nsec = divmod(ev.time_ns, 1_000_000_000)
    who, v = ev.context, ev.victim
    keyfield = f" key={enc_key(keys)}" if keys else ""

    def user(pid: int, uid: int, auid: int, ses: int, msg: str) -> Record:
        return Record("USER", [("pid", enc_int(pid)), ("uid", enc_int(uid)),
                               ("auid", enc_int(auid)), ("ses", enc_int(ses)),
                               ("msg", f"'{msg}{keyfield} res=success'"), SRC])

    exe = enc_str(who.exe) if who.exe else "(null)"
    # not `code=`/`result=`: ausearch -i reads those as a seccomp action and a success flag
    common = f"sig={ev.sig} si_code={ev.si_code} delivery={ev.result}"
    out = [Event(sec, nsec // 1_000_000, serial, [user(
        who.pid, who.uid, who.auid, who.ses,
        f"op=signal-generate {common} comm={enc_str(who.comm)} exe={exe}"
        f" opid={v.pid} ocomm={enc_str(v.comm)}")], "ebpf")]
    if v.pid != who.pid:
        out.append(Event(sec, nsec // 1_000_000, 0, [user(
            v.pid, v.uid, v.auid, v.ses,
            f"op=signal-receive {common} comm={enc_str(v.comm)}"
            f" spid={who.pid} scomm={enc_str(who.comm)}")], "ebpf"))
    return out


# ---- records beside SYSCALL: PATH, CWD, SOCKADDR, EXECVE ---------------------------------
# Shared by the families that name files, addresses or programs (exec, ioctl, net, exit).

def event_of(ev: SyscallEvent, records: list[Record], serial: int) -> Event:
    sec, nsec = divmod(ev.time_ns, 1_000_000_000)
    return Event(sec, nsec // 1_000_000, serial, records, "ebpf")


def dev_text(dev: int) -> str:
    """A kernel dev_t as audit prints it: MAJOR:MINOR, two hex digits at least."""
    return f"{dev >> 20:02x}:{dev & 0xFFFFF:02x}"


def path_record(item: int, name: bytes | None, f: FileInfo | None,
                nametype: str = "NORMAL") -> Record:
    """PATH in the kernel's field order (audit_log_name). The cap_* fields need the file's
    capability xattr, which is not read: they are left out rather than guessed."""
    fields = [("item", enc_int(item)), ("name", enc_str(name) if name is not None else "(null)")]
    if f is not None:
        fields += [("inode", enc_int(f.ino)), ("dev", dev_text(f.dev)),
                   ("mode", "0" + format(f.mode, "o")), ("ouid", enc_int(f.uid)),
                   ("ogid", enc_int(f.gid)), ("rdev", dev_text(f.rdev))]
    fields += [("nametype", nametype), SRC]
    return Record("PATH", fields)


def cwd_record(cwd: bytes) -> Record:
    return Record("CWD", [("cwd", enc_str(cwd)), SRC])


def sockaddr_record(saddr: bytes) -> Record:
    # the kernel writes the bytes as hex, whatever they are (audit_log_n_hex)
    return Record("SOCKADDR", [("saddr", saddr.hex().upper()), SRC])


MAX_EXECVE_AUDIT_LEN = 7500   # kernel/auditsc.c
_ABUF = 96                    # sizeof(abuf) in audit_log_execve_info()


def _has_control(b: bytes) -> bool:
    # audit_string_contains_control(): '"', and anything outside 0x21..0x7e
    return any(c == 0x22 or c < 0x21 or c > 0x7E for c in b)


def execve_records(argv: list[bytes], argc: int | None = None) -> list[Record]:
    """EXECVE record(s) as audit_log_execve_info() writes them: `argc=N a0="ls" a1=2D6C`,
    an argument longer than fits becomes `aN_len=L aN[0]=... aN[1]=...` (hex), and a new
    record starts when one would pass MAX_EXECVE_AUDIT_LEN. Same budget arithmetic as the
    kernel's, so record boundaries fall where its fall."""
    records: list[list[tuple[str, str]]] = [[("argc", enc_int(len(argv) if argc is None
                                                              else argc))]]
    len_max = MAX_EXECVE_AUDIT_LEN
    len_rem = len_max
    for n, arg in enumerate(argv):
        p, len_full, pending = 0, len(arg), b""
        require, encode, it = True, False, 0
        while True:
            if require:
                room = len_max - len(pending)
                if len(arg) - p >= room:       # no NUL within room: the kernel takes room
                    chunk, require, encode = arg[p:p + room], True, True
                    len_full *= 2
                    p += room
                else:
                    chunk, require = arg[p:], False
                    encode = encode or _has_control(chunk)
                    if len_full < len_max:
                        len_full = len(chunk) * 2 if encode else len(chunk)
                    p = len(arg)
                pending += chunk
                len_abuf = len(pending) * 2 if encode else len(pending) + 2
            if len_rem < _ABUF + 8:
                records.append([])
                len_rem = len_max
            fields = records[-1]
            if require or it > 0 or len_abuf + _ABUF > len_rem:
                prefix = 0
                if it == 0:
                    fields.append((f"a{n}_len", enc_int(len_full)))
                    prefix += len(f" a{n}_len={len_full}")
                name = f"a{n}[{it}]"
                it += 1
            else:
                name, prefix = f"a{n}", 0
            prefix += len(f" {name}=")
            len_rem -= prefix
            take = len(pending)
            if encode:
                if len_abuf > len_rem:
                    take = len_rem // 2
                fields.append((name, pending[:take].hex().upper()))
                len_rem -= take * 2
                len_abuf -= take * 2
            else:
                if len_abuf > len_rem:
                    take = len_rem - 2
                fields.append((name, '"' + pending[:take].decode("latin-1") + '"'))
                len_rem -= take + 2
                len_abuf -= take
            pending = pending[take:]
            if not pending and not require:
                break
    return [Record("EXECVE", [*f, SRC]) for f in records]
