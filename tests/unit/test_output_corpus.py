"""Every output format, byte for byte, against golden files of a fixed corpus of events.

tests/unit/corpus.py builds varied events (every subcommand that writes records, relayed
kernel records, the session's loss record) with today's code; `render` writes them as the
sink writes a log; tests/data/golden/{raw,enriched,interpreted,json}.out hold the bytes
this gave when the files were made. A failure names the first event that differs, with
its expected and actual lines.

When the event path changes, adapt `render` (and corpus.build_case) to the new API; the
golden files must not change.

Regenerating: `AUDTRACE_REGEN_GOLDEN=1` makes test_format_matches_golden rewrite the golden
files from today's output (the test then skips, saying so). Only for an intended change of
an output format, and review the diff of tests/data/golden/ before committing it.

The interpreted format prints local time: TZ is pinned to UTC here. Enriched, interpreted
and json name uids/gids from the user database: they are skipped, with the reason, on a
machine whose names differ from Debian's base-passwd (corpus.names_as_expected).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import corpus
import orjson
import pytest
from audtrace.compat.record import Event, parse_line, stamp
from audtrace.tracer.sink import FORMATS, Sink

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
REGEN = os.environ.get("AUDTRACE_REGEN_GOLDEN") == "1"


def render(events: list[Event], fmt: str, batch: bool = False) -> bytes:
    """The events as `audtrace --format FMT -o FILE` appends them to FILE (one at a time,
    or in one batch)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.log")
        sink = Sink(path, fmt)
        try:
            if batch:
                sink.write_many(events)
            for ev in events if not batch else ():
                sink.write(ev)
        finally:
            sink.close()
        return Path(path).read_bytes()


@pytest.fixture(autouse=True, scope="module")
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def needs_names(fmt: str) -> None:
    why = corpus.names_as_expected() if fmt != "raw" else None
    if why is not None:
        pytest.skip(f"{fmt} output names users and groups, and {why}")


# ---- where two outputs part ---------------------------------------------------------------

_STAMP = re.compile(rb"^(?:node=\S+ )?type=\S+ msg=audit\(([^)]*)\)")


def split_events(data: bytes, fmt: str) -> list[bytes]:
    """A log in format `fmt` -> the bytes of each event, newlines kept."""
    lines = data.splitlines(keepends=True)
    if fmt == "json":
        return lines
    chunks: list[list[bytes]] = []
    last = None
    for line in lines:
        if fmt == "interpreted":
            new = line == b"----\n"
        else:   # raw, enriched: an event is the run of lines with one node and stamp
            m = _STAMP.match(line)
            key = (line.split(b" ", 1)[0] if line.startswith(b"node=") else b"",
                   m.group(1) if m else None)
            new, last = key != last, key
        if new or not chunks:
            chunks.append([])
        chunks[-1].append(line)
    return [b"".join(c) for c in chunks]


def _show(data: bytes, limit: int = 300) -> str:
    """Bytes as one readable line: control and undecodable bytes escaped, long text cut."""
    text = data.decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(data)} bytes)"


def first_difference(named: list[tuple[str, Event]], fmt: str, expected: bytes) -> str:
    """Where `expected` (a golden file) and today's output of the corpus part: the first
    event that differs, its expected and actual lines, and the first differing bytes."""
    want = split_events(expected, fmt)
    for i, (name, ev) in enumerate(named):
        got = render([ev], fmt)
        exp = want[i] if i < len(want) else b""
        if got == exp:
            continue
        at = next((j for j, (a, b) in enumerate(zip(exp, got, strict=False)) if a != b),
                  min(len(exp), len(got)))
        lo = max(at - 40, 0)
        out = [f"{fmt}: event {i + 1} of {len(named)}, {name}, differs",
               f"first difference at byte {at} of the event:",
               f"  expected ...{_show(exp[lo:at + 40])}",
               f"  got      ...{_show(got[lo:at + 40])}", "expected:"]
        out += [f"  {_show(line)}" for line in exp.splitlines()] or ["  (nothing)"]
        out += ["got:"] + [f"  {_show(line)}" for line in got.splitlines()]
        return "\n".join(out)
    return (f"{fmt}: the golden file has {len(want)} events, the corpus {len(named)} "
            "(each corpus event matches its place)")


# ---- the tests ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_format_matches_golden(fmt: str) -> None:
    path = GOLDEN / f"{fmt}.out"
    if REGEN:
        if corpus.names_as_expected() is not None:
            pytest.fail(f"cannot regenerate here: {corpus.names_as_expected()}")
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render([ev for _n, ev in corpus.build()], fmt))
        pytest.skip(f"AUDTRACE_REGEN_GOLDEN=1: rewrote {path}; review its diff")
    needs_names(fmt)
    named = corpus.build()
    expected = path.read_bytes()
    # twice: the second time every record and identity has its renderings kept from the
    # first, and the events go in one batch, as the session writes them
    for batch in (False, True):
        got = render([ev for _n, ev in named], fmt, batch=batch)
        if got != expected:
            pytest.fail(first_difference(corpus.build(), fmt, expected), pytrace=False)


def test_corpus_covers_what_it_claims() -> None:
    """Enough events, every record-writing subcommand, every signal syscall."""
    named = corpus.build()
    families = {name.split("/", 1)[0] for name, _ev in named}
    assert {"kill", "ksignal", "bind", "net", "ioctl", "clock", "exec", "exit", "rules",
            "trace", "latency", "audit", "session"} <= families
    assert len(named) >= 60
    syscalls = {r.get("syscall") for _n, ev in named for r in ev.records if r.type == "SYSCALL"}
    assert {str(corpus.NR[n]) for n in ("kill", "tkill", "tgkill", "rt_sigqueueinfo",
                                        "rt_tgsigqueueinfo", "pidfd_send_signal")} <= syscalls
    idents = [ev.ident() for _n, ev in named]
    assert len(set(idents)) == len(idents), "two events share an identity: ausearch merges them"


def test_golden_raw_parses_back() -> None:
    lines = (GOLDEN / "raw.out").read_text(errors="surrogateescape").splitlines()
    assert lines
    for line in lines:
        parse_line(line)            # raises on a line ausearch would not read


def test_golden_json_parses_back() -> None:
    lines = (GOLDEN / "json.out").read_bytes().splitlines()
    ids = [orjson.loads(line)["ID"] for line in lines]
    assert ids == [stamp(ev) for _n, ev in corpus.build()]


def test_ausearch_reads_every_event_of_the_golden_raw_file() -> None:
    """The real ausearch finds each event of the corpus, by (node, time, serial)."""
    if shutil.which("ausearch") is None:
        pytest.skip("ausearch is not installed (Debian package auditd)")
    out = subprocess.run(["ausearch", "-if", str(GOLDEN / "raw.out"), "--raw"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    found = set()
    for line in out.stdout.decode(errors="surrogateescape").splitlines():
        node, _type, sec, msec, serial, _body = parse_line(line)
        found.add((node, sec, msec, serial))
    missing = [name for name, ev in corpus.build() if ev.ident() not in found]
    assert not missing, f"ausearch does not return: {missing}"
