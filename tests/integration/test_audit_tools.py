"""audtrace's real output, every subcommand's, read by the audit tools sites run on it.

The logs come from one real run of each subcommand (outputs.py), with kernel audit's relayed
events beside audtrace's where the subcommand has a kernel side, plus the loss record as the
session writes it. Then:

- laurel (Debian's package: the JSON plugin of auditd) reads each log on stdin, as auditd
  feeds a plugin, with a configuration of this test's own: it must log no error and emit
  exactly the events audtrace wrote (same ids, each once, every record type), and read
  audtrace's own fields as written (no number taken for hex text);
- ausearch, with every search option under --debug, on each shape of event: no event is
  skipped as malformed, and an event is found by each value it carries where ausearch
  searches that field (the kernel's relayed events of the same logs are held to the same
  rule, which shows the rule is ausearch's); `ausearch -i` shows every record and misreads
  none of audtrace's own fields; `ausearch -a` selects eBPF serials.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from audtrace.compat.record import Event, dec_str, format_raw, parse_log, split_fields
from audtrace.tracer import records as audit_records
from audtrace.tracer import serials
from outputs import RUNS, record_outputs

pytestmark = pytest.mark.kernel

NAMES = [*RUNS, "trace", "built"]
# every record type audtrace writes, and the ops of its USER records
RECORD_TYPES = {"SYSCALL", "OBJ_PID", "PROCTITLE", "SOCKADDR", "PATH", "CWD", "EXECVE", "USER",
                "ANOM_ABEND", "KERNEL_OTHER", "TIME_INJOFFSET", "DAEMON_ERR"}
USER_OPS = {"signal-generate", "signal-receive", "port-held"}


@pytest.fixture(scope="module")
def real_outputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("outputs")
    logs = {o.name: o.log for o in record_outputs(root)}
    logs["built"] = root / "built.log"
    logs["built"].write_text(format_raw(loss_event(12)) + "\n")
    return logs


def loss_event(n: int) -> Event:
    """The DAEMON_ERR a session writes when its program lost n events (its own code),
    numbered by a run's own serials."""
    ev = audit_records.loss_event("ebpf", n, n, time.time_ns())
    serial = serials.Serials()
    ev.serial = next(serial)
    serial.close()
    return ev


def ident(ev: Event) -> str:
    return f"{ev.sec}.{ev.msec:03d}:{ev.serial}"


def fields_of(rec) -> dict[str, str]:
    """A record's fields; a USER record's msg='...' fields beside its own."""
    out = dict(rec.field_items())
    if rec.type == "USER" and "msg" in out:
        out.update(split_fields(out["msg"].strip("'")))
    return out


def all_events(logs: dict[str, Path]) -> list[Event]:
    return [ev for p in logs.values() for ev in parse_log(p.read_text().splitlines())]


def kernel_fields(logs: dict[str, Path]) -> dict[str, set[str]]:
    """Per record type, the field names kernel audit wrote in these logs: the rest of an
    eBPF record's fields are audtrace's own."""
    out: dict[str, set[str]] = {}
    for ev in all_events(logs):
        if ev.source == "audit":
            for rec in ev.records:
                out.setdefault(rec.type, set()).update(k for k, _v in rec.field_items())
    return out


def test_outputs_hold_every_record_type(real_outputs):
    evs = [ev for ev in all_events(real_outputs) if ev.source == "ebpf"]
    assert {r.type for ev in evs for r in ev.records} >= RECORD_TYPES
    ops = {fields_of(r).get("op") for ev in evs for r in ev.records if r.type == "USER"}
    assert ops >= USER_OPS
    assert all(2**31 <= ev.serial < 2**32 for ev in evs)


# ---- laurel ---------------------------------------------------------------------------------
def laurel(workdir: Path, text: str) -> tuple[list[dict], list[str]]:
    """laurel fed TEXT on stdin, as auditd feeds a plugin; its events and its stderr lines."""
    workdir.mkdir()
    conf = workdir / "laurel.toml"
    conf.write_text(f'directory = "{workdir}"\nstatusreport-period = 0\n'
                    '[auditlog]\nfile = "events.jsonl"\n')
    r = subprocess.run(["laurel", "--config", str(conf)], input=text, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = workdir / "events.jsonl"
    lines = out.read_text().splitlines() if out.exists() else []
    return [json.loads(ln) for ln in lines], r.stderr.splitlines()


def _as_laurel_reads(raw: str, got) -> bool:
    """Is laurel's value `got` the field as audtrace wrote it (`raw`)?"""
    if raw[:1] in ('"', "'"):
        return got == raw[1:-1]
    if re.fullmatch(r"-?\d+", raw):
        return got in (int(raw), raw)           # a number, or the digits as text
    if raw == "(null)":
        return got is None
    if len(raw) % 2 == 0 and re.fullmatch(r"[0-9A-F]*[A-F][0-9A-F]*", raw):
        return isinstance(got, str)              # hex text, decoded in laurel's escaping
    return got == raw


needs_laurel = pytest.mark.skipif(shutil.which("laurel") is None,
                                  reason="needs laurel (Debian package laurel)")


@needs_laurel
@pytest.mark.parametrize("name", NAMES)
def test_laurel_reads_every_event(real_outputs, name, tmp_path):
    text = real_outputs[name].read_text()
    written = parse_log(text.splitlines())
    got, err = laurel(tmp_path / "laurel", text)
    assert [ln for ln in err if "rror" in ln and "0 errors" not in ln] == []
    stopped = next(ln for ln in err if " processed " in ln)
    assert f" processed {len(text.splitlines())} lines " in stopped
    assert stopped.endswith(" with 0 errors in total"), stopped
    assert sorted(o["ID"] for o in got) == sorted(ident(ev) for ev in written)
    by_id = {o["ID"]: o for o in got}
    kernel = kernel_fields(real_outputs)
    for ev in written:
        obj = by_id[ident(ev)]
        assert {r.type for r in ev.records} <= set(obj), (ident(ev), sorted(obj))
        if ev.source != "ebpf":
            continue
        for rtype in {r.type for r in ev.records} - {"EXECVE", "PROCTITLE", "SOCKADDR"}:
            mine = [r for r in ev.records if r.type == rtype]
            theirs = obj[rtype] if isinstance(obj[rtype], list) else [obj[rtype]]
            for rec, lrec in zip(mine, theirs, strict=True):
                for k, raw in rec.field_items():
                    if k not in kernel.get(rtype, set()):      # audtrace's own field
                        assert _as_laurel_reads(raw, lrec.get(k)), (rtype, k, raw, lrec.get(k))


@needs_laurel
def test_laurel_reads_all_outputs_as_one_stream(real_outputs, tmp_path):
    text = "".join(p.read_text() for p in real_outputs.values())
    got, err = laurel(tmp_path / "laurel", text)
    assert next(ln for ln in err if " processed " in ln).endswith(" with 0 errors in total")
    assert sorted(o["ID"] for o in got) == sorted(ident(ev) for ev in all_events(real_outputs))


# ---- ausearch -------------------------------------------------------------------------------
# option -> (field, the record types in which ausearch searches it)
SEARCHED = {
    "-p": ("pid", {"SYSCALL", "USER", "ANOM_ABEND"}),
    "-pp": ("ppid", {"SYSCALL"}),
    "-ui": ("uid", {"SYSCALL", "USER"}),  # ANOM_ABEND's: not the kernel's own either
    "-ul": ("auid", {"SYSCALL", "USER", "ANOM_ABEND"}),
    "-ue": ("euid", {"SYSCALL"}),
    "-gi": ("gid", {"SYSCALL", "ANOM_ABEND"}),
    "-ge": ("egid", {"SYSCALL"}),
    "-k": ("key", {"SYSCALL"}),
    "-c": ("comm", {"SYSCALL", "USER", "ANOM_ABEND"}),
    "-x": ("exe", {"SYSCALL", "USER", "ANOM_ABEND"}),
    "-sv": ("success", {"SYSCALL", "USER", "ANOM_ABEND"}),
    "-tm": ("tty", {"SYSCALL"}),
    "--session": ("ses", {"SYSCALL", "USER", "ANOM_ABEND"}),
    "-sc": ("syscall", {"SYSCALL"}),
    "-f": ("name", {"PATH"}),
    "-se": ("subj", set()),        # no LSM labels in these records: never found
    "-hn": ("addr", {"SOCKADDR"}),
}
NOT_THERE = {"-sc": "kill", "-sv": "yes", "-tm": "pts/99", "-x": "/nonexistent", "-hn": "zzz",
             "-c": "no-such-comm", "-k": "no-such-key", "-f": "/nonexistent",
             "-se": "system_u:system_r:x_t"}


def search_value(ev: Event, field: str, types: set[str]) -> str | None:
    """The value ausearch should find ev by, from its first record of those types that
    carries the field; None when none does."""
    for rec in ev.records:
        if rec.type not in types:
            continue
        f = fields_of(rec)
        if field == "success":
            res = f.get("success") or {"success": "yes", "1": "yes", "failed": "no",
                                       "0": "no"}.get(f.get("res", ""))
            if res:
                return res
        elif field == "addr":
            saddr = bytes.fromhex(f.get("saddr", ""))
            if saddr[:2] == b"\x02\x00":
                return ".".join(str(b) for b in saddr[4:8])
        elif f.get(field) not in (None, "(null)", "(none)"):
            v = f[field]
            if field in ("comm", "exe", "key", "name"):
                text = dec_str(v)
                return text.decode(errors="replace") if text else None
            return v
    return None


def shapes(text: str) -> list[Event]:
    """One event of each shape (source, record types, USER op) in a log."""
    seen, out = set(), []
    for ev in parse_log(text.splitlines()):
        shape = (ev.source, tuple(r.type for r in ev.records),
                 fields_of(ev.records[0]).get("op"))
        if shape not in seen:
            seen.add(shape)
            out.append(ev)
    return out


def ausearch(log: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ausearch", "-if", str(log), *args], capture_output=True,
                          text=True, timeout=60, env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin"})


needs_ausearch = pytest.mark.skipif(shutil.which("ausearch") is None,
                                    reason="needs ausearch (package auditd)")


@needs_ausearch
@pytest.mark.parametrize("name", NAMES)
def test_ausearch_every_search_option(real_outputs, name, tmp_path):
    wrong = []
    for i, ev in enumerate(shapes(real_outputs[name].read_text())):
        log = tmp_path / f"event-{i}.log"
        log.write_text(format_raw(ev) + "\n")
        what = f"{ev.source} {'/'.join(r.type for r in ev.records)} {ident(ev)}"
        for opt, (field, types) in SEARCHED.items():
            value = search_value(ev, field, types)
            r = ausearch(log, "--debug", opt, value or NOT_THERE.get(opt, "999999"), "--raw")
            if "Malformed event skipped" in r.stderr:
                wrong.append(f"{what}: {opt} skips it as malformed: {r.stderr.strip()}")
            elif bool(r.stdout.strip()) != (value is not None):
                wrong.append(f"{what}: {opt} {value} {'misses' if value else 'finds'} it")
    assert wrong == []


# fields of audtrace's own records whose interpretation by `ausearch -i` is meant
INTERPRETED = {"uid", "auid", "ses", "sig", "proto", "ouid", "oauid", "res", "proctitle",
               "gid"}


def _shown_as_written(raw: str, shown: str) -> bool:
    if raw.startswith('"'):
        return shown in (raw, raw[1:-1])       # records ausearch does not interpret: as is
    if re.fullmatch(r"(?:[0-9A-F]{2})+", raw) and not raw.isdigit():
        return shown == bytes.fromhex(raw).decode(errors="replace")
    return shown == raw


@needs_ausearch
@pytest.mark.parametrize("name", NAMES)
def test_ausearch_interprets_without_misreading(real_outputs, name, tmp_path):
    kernel = kernel_fields(real_outputs)
    for i, ev in enumerate(e for e in shapes(real_outputs[name].read_text())
                           if e.source == "ebpf"):
        log = tmp_path / f"event-{i}.log"
        log.write_text(format_raw(ev) + "\n")
        shown = [ln for ln in ausearch(log, "-i").stdout.splitlines()
                 if ln.startswith("type=")]
        assert sorted(ln.split()[0][5:] for ln in shown) == sorted(r.type for r in ev.records)
        for ln in shown:
            rtype, body = re.match(r"type=(\S+) msg=audit\([^)]*\) : (.*)$", ln).groups()
            got = dict(split_fields(body.rstrip()))
            if rtype == "USER":
                got.update(split_fields(got.pop("msg").strip("'")))
            rec = next(r for r in ev.records if r.type == rtype)
            for k, raw in fields_of(rec).items():
                if k in kernel.get(rtype, set()) or k in INTERPRETED or k == "msg":
                    continue
                assert _shown_as_written(raw, got.get(k, "")), (rtype, k, raw, got.get(k))


@needs_ausearch
def test_ausearch_selects_ebpf_serials(real_outputs):
    """`ausearch -a` keeps an event id in 32 bits: eBPF serials fit."""
    ev = next(e for e in parse_log(real_outputs["kill"].read_text().splitlines())
              if e.source == "ebpf")
    r = ausearch(real_outputs["kill"], "-a", str(ev.serial), "--raw")
    assert {int(s) for s in re.findall(r"msg=audit\([\d.]+:(\d+)\)", r.stdout)} == {ev.serial}
