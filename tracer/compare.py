"""Pair the eBPF and the kernel-audit events that describe the same syscall; say what differs.

Pure: events in, a Comparison out, then text or JSON. Two events describe the same syscall
when pid, syscall number and a0..a3 are equal and their stamps lie within `window_ms`
(audit stamps at entry with the coarse clock, eBPF with the monotonic clock converted to
wall time: audit's stamp is up to a tick earlier). Each event is paired at most once,
nearest stamp first.

For an event only one side saw, the reason is taken from facts the caller gathered:
`Facts.no_audit_context` (pids whose task had no audit context, read in the kernel by the
eBPF probe), `Facts.started_before_audit` (pids started before audtrace enabled audit),
the two sources' lost counters, and `Facts.audit_broader` (request filters kernel audit
rules cannot express, so audit reports more).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from audtrace.compat.record import Event, Record

ARGS = ("a0", "a1", "a2", "a3")
# fields that differ by construction, not by what was observed
MARKERS = {"src"}


@dataclass
class Facts:
    no_audit_context: set[int] = field(default_factory=set)
    started_before_audit: set[int] = field(default_factory=set)
    audit_lost: int = 0
    ebpf_lost: int = 0
    audit_was_off: bool = False
    audit_broader: str | None = None   # e.g. "--port": audit rules have no such field


@dataclass
class View:
    """What pairing needs of one event."""
    source: str
    time_ms: int
    pid: int
    syscall: int
    args: tuple[str, ...]
    exit: str | None
    comm: str | None
    event: Event

    @classmethod
    def of(cls, ev: Event) -> View | None:
        sc = next((r for r in ev.records if r.type == "SYSCALL"), None)
        if sc is None:
            return None
        f = dict(sc.field_items())
        try:
            pid, nr = int(f["pid"]), int(f["syscall"])
        except (KeyError, ValueError):
            return None
        return cls(ev.source, ev.sec * 1000 + ev.msec, pid, nr,
                   tuple(f.get(a, "") for a in ARGS), f.get("exit"), f.get("comm"), ev)


@dataclass
class RecordDiff:
    type: str
    equal: list[str] = field(default_factory=list)
    differ: list[tuple[str, str, str]] = field(default_factory=list)   # name, ebpf, audit
    only_ebpf: list[tuple[str, str]] = field(default_factory=list)
    only_audit: list[tuple[str, str]] = field(default_factory=list)
    text: str = ""                  # the eBPF record, as written


@dataclass
class Row:
    kind: str                       # "pair", "ebpf-only", "audit-only"
    time_ms: int
    pid: int
    syscall: int
    comm: str | None
    exit: str | None
    delta_ms: int | None = None     # eBPF stamp - audit stamp
    records: list[RecordDiff] = field(default_factory=list)
    records_only_ebpf: list[tuple[str, str]] = field(default_factory=list)   # type, text
    records_only_audit: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None


@dataclass
class Comparison:
    rows: list[Row]
    facts: Facts

    def counts(self) -> dict[str, int]:
        out = {"pair": 0, "ebpf-only": 0, "audit-only": 0}
        for r in self.rows:
            out[r.kind] += 1
        return out

    def to_json(self) -> dict:
        facts = asdict(self.facts)
        for k in ("no_audit_context", "started_before_audit"):
            facts[k] = sorted(facts[k])
        return {"counts": self.counts(), "facts": facts, "rows": [asdict(r) for r in self.rows]}


def diff_records(e: list[Record], a: list[Record]) -> tuple[list[RecordDiff],
                                                            list[Record], list[Record]]:
    """Records matched by type, in order (the n-th OBJ_PID with the n-th); the rest are
    one side's own."""
    diffs, rest_a = [], list(a)
    only_e = []
    for rec in e:
        match = next((x for x in rest_a if x.type == rec.type), None)
        if match is None:
            only_e.append(rec)
            continue
        rest_a.remove(match)
        fe = [(k, v) for k, v in rec.field_items() if k not in MARKERS]
        fa = dict(match.field_items())
        d = RecordDiff(rec.type, text=rec.text())
        seen = set()
        for k, v in fe:
            seen.add(k)
            if k not in fa:
                d.only_ebpf.append((k, v))
            elif fa[k] == v:
                d.equal.append(k)
            else:
                d.differ.append((k, v, fa[k]))
        d.only_audit = [(k, v) for k, v in match.field_items() if k not in seen]
        diffs.append(d)
    return diffs, only_e, rest_a


def pair(events: list[Event], window_ms: int = 20) -> list[tuple[View | None, View | None]]:
    """(eBPF view, audit view) pairs and singles, in time order."""
    ebpf = [v for v in map(View.of, (e for e in events if e.source == "ebpf")) if v]
    audit = [v for v in map(View.of, (e for e in events if e.source == "audit")) if v]
    candidates = []
    for i, e in enumerate(ebpf):
        for j, a in enumerate(audit):
            if (e.pid, e.syscall, e.args) == (a.pid, a.syscall, a.args) and \
                    abs(e.time_ms - a.time_ms) <= window_ms:
                candidates.append((abs(e.time_ms - a.time_ms), i, j))
    used_e, used_a, out = set(), set(), []
    for _d, i, j in sorted(candidates):
        if i in used_e or j in used_a:
            continue
        used_e.add(i)
        used_a.add(j)
        out.append((ebpf[i], audit[j]))
    out += [(e, None) for i, e in enumerate(ebpf) if i not in used_e]
    out += [(None, a) for j, a in enumerate(audit) if j not in used_a]
    out.sort(key=lambda p: (p[0] or p[1]).time_ms)
    return out


def ebpf_only_reason(v: View, facts: Facts) -> str:
    if v.pid in facts.no_audit_context:
        return ("no audit context: the process was forked before audit was first enabled,"
                " so kernel audit never records its syscalls")
    if v.pid in facts.started_before_audit:
        return ("the process started before audtrace enabled audit: it has no audit"
                " context, kernel audit never records it")
    if facts.audit_lost:
        return f"kernel audit lost {facts.audit_lost} records (backlog or rate limit)"
    return "kernel audit sent no record (unexplained)"


def audit_only_reason(v: View, facts: Facts) -> str:
    if facts.ebpf_lost:
        return f"eBPF lost {facts.ebpf_lost} events (perf buffer or in-flight table full)"
    if facts.audit_broader:
        return (f"audit rules cannot express {facts.audit_broader}: kernel audit reports"
                " calls the eBPF filter dropped")
    return "no eBPF event (unexplained)"


def compare(events: list[Event], facts: Facts, syscalls: set[int] | None = None,
            window_ms: int = 20) -> Comparison:
    """Rows for every SYSCALL event of `syscalls` (all when None)."""
    wanted = [e for e in events if syscalls is None or
              ((v := View.of(e)) is not None and v.syscall in syscalls)]
    rows = []
    for e, a in pair(wanted, window_ms):
        if e is not None and a is not None:
            diffs, only_e, only_a = diff_records(e.event.records, a.event.records)
            rows.append(Row("pair", a.time_ms, e.pid, e.syscall, e.comm, e.exit,
                            e.time_ms - a.time_ms, diffs,
                            [(r.type, r.text()) for r in only_e],
                            [(r.type, r.text()) for r in only_a]))
        elif e is not None:
            rows.append(Row("ebpf-only", e.time_ms, e.pid, e.syscall, e.comm, e.exit,
                            reason=ebpf_only_reason(e, facts),
                            records_only_ebpf=[(r.type, r.text()) for r in e.event.records]))
        elif a is not None:
            rows.append(Row("audit-only", a.time_ms, a.pid, a.syscall, a.comm, a.exit,
                            reason=audit_only_reason(a, facts),
                            records_only_audit=[(r.type, r.text()) for r in a.event.records]))
    return Comparison(rows, facts)


# ---- the table ---------------------------------------------------------------------------

RECORD_NOTES = {
    "OBJ_PID": "the process holding the port, found at the failure: kernel audit names none",
    "SOCKADDR": "the address: kernel audit writes it only for tasks it audits",
}


def _when(ms: int) -> str:
    import time

    return time.strftime("%H:%M:%S", time.localtime(ms // 1000)) + f".{ms % 1000:03d}"


def _exit_text(exit_: str | None) -> str:
    from audtrace.compat import tables

    if exit_ is None:
        return "-"
    try:
        n = int(exit_)
    except ValueError:
        return exit_
    name = tables.errno_name(-n) if n < 0 else None
    return f"{n} {name}" if name else str(n)


def _short(text: str, limit: int = 110) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _decoded(rtype: str, text: str) -> str:
    """How `ausearch -i` would show a record, for the few lines the table prints."""
    from audtrace.compat.interpret import interpret_record

    try:
        pairs = interpret_record(Record(rtype, body=text))
    except Exception:  # a record the interpreter does not know: show it raw
        return text
    return " ".join(f"{k}={v}" for k, v in pairs if k != "src")


def format_table(cmp: Comparison, syscall_name) -> str:
    c, f = cmp.counts(), cmp.facts
    head = (f"{c['pair']} paired, {c['ebpf-only']} only eBPF, {c['audit-only']} only kernel"
            f" audit; lost: eBPF {f.ebpf_lost}, audit {f.audit_lost}")
    if f.audit_was_off:
        head += ("; audit was off when this run began (a process forked before audit was"
                 " first enabled since boot is never audited)")
    lines = [head, f"{'#':>3}  {'time':12}  {'pid':>7}  {'comm':16}  {'syscall':10}  "
             f"{'exit':18}  {'seen by':15}  fields"]
    for i, r in enumerate(cmp.rows, 1):
        seen = {"pair": f"both ({r.delta_ms:+d} ms)", "ebpf-only": "eBPF only",
                "audit-only": "audit only"}[r.kind]
        equal = sum(len(d.equal) for d in r.records)
        differ = sum(len(d.differ) for d in r.records)
        fields = f"{equal} equal, {differ} differ" if r.kind == "pair" else "-"
        comm = (r.comm or "?").strip('"')
        lines.append(f"{i:>3}  {_when(r.time_ms):12}  {r.pid:>7}  {comm[:16]:16}  "
                     f"{(syscall_name(r.syscall) or str(r.syscall))[:10]:10}  "
                     f"{_exit_text(r.exit)[:18]:18}  {seen:15}  {fields}")
        pad = " " * 5
        for d in r.records:
            for name, ev, au in d.differ:
                lines.append(f"{pad}differs    {d.type}.{name}: eBPF {ev} | audit {au}")
            if d.only_ebpf:
                lines.append(f"{pad}eBPF only  {d.type} fields: "
                             + " ".join(f"{k}={v}" for k, v in d.only_ebpf))
            if d.only_audit:
                lines.append(f"{pad}audit only {d.type} fields: "
                             + " ".join(f"{k}={v}" for k, v in d.only_audit))
            if d.type == "SOCKADDR" and not d.differ:
                lines.append(f"{pad}same       SOCKADDR " + _short(_decoded("SOCKADDR", d.text)))
        for tp, text in r.records_only_ebpf if r.kind == "pair" else []:
            note = RECORD_NOTES.get(tp, "")
            lines.append(f"{pad}eBPF only  {tp} {_short(_decoded(tp, text))}")
            if note:
                lines.append(f"{pad}           ({note})")
        for tp, text in r.records_only_audit if r.kind == "pair" else []:
            lines.append(f"{pad}audit only {tp} {_short(_decoded(tp, text))}")
        if r.reason:
            lines.append(f"{pad}why: {r.reason}")
    return "\n".join(lines)
