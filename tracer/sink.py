"""Where records go: stdout or a log file, in one of four formats."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from audtrace.compat.record import Event
from audtrace.tracer.log_policy import Policy
from audtrace.tracer.logfile import LogFile

# format -> (module, function): imported on use, a raw log needs no interpretation tables
FORMATS: dict[str, tuple[str, str]] = {
    "raw": ("audtrace.compat.record", "format_raw"),
    "enriched": ("audtrace.compat.interpret", "format_enriched"),
    "interpreted": ("audtrace.compat.interpret", "format_interpreted"),
    "json": ("audtrace.compat.jsonfmt", "format_json"),
}


class SinkError(Exception):
    pass


class Sink:
    """Appends formatted events: to stdout, or to a log file (tracer/logfile.py) created
    0600 and never truncated, that holds only whole events and follows `policy` when the
    disk is full or failing."""

    def __init__(self, path: str | None, fmt: str, policy: Policy | None = None,
                 notice: Callable[[str], None] | None = None) -> None:
        if fmt not in FORMATS:
            raise SinkError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
        module, func = FORMATS[fmt]
        self.format: Callable[[Event], str | bytes] = getattr(importlib.import_module(module), func)
        self.path = path
        self.count = 0
        self.log: LogFile | None = None
        self.fd = sys.stdout.fileno()
        if path is not None and path != "-":
            try:
                self.log = LogFile(path, policy, notice)
            except OSError as e:
                raise SinkError(f"cannot write {path}: {e.strerror}") from None

    def write(self, ev: Event) -> int:
        return self.write_many([ev])

    def render(self, events: list[Event],
               fmt: Callable[[Event], str | bytes] | None = None) -> list[bytes]:
        """Each event's text in the sink's format (or `fmt`), without its final newline."""
        fmt = fmt or self.format
        parts = [fmt(ev) for ev in events]
        if parts and not isinstance(parts[0], bytes):
            # interpreted text may carry undecodable bytes of the traced programs: keep them
            parts = [p.encode(errors="surrogateescape") for p in parts]
        return parts

    def write_many(self, events: list[Event]) -> int:
        """The events, formatted, in one write. Returns how many were written: all of them
        on stdout; to a log, the first ones that it could take (the rest are lost)."""
        parts = self.render(events)
        if self.log is not None:
            n = self.log.append(parts)
        else:
            data = b"\n".join(parts) + b"\n"
            while data:
                data = data[os.write(self.fd, data):]
            n = len(events)
        self.count += n
        return n

    @property
    def stopped(self) -> str | None:
        """Why the log asks the run to end (its stop action), if it does."""
        return self.log.stopped if self.log is not None else None

    def request_resume(self) -> None:
        """SIGUSR2, as `auditd resume`: a suspended log writes again."""
        if self.log is not None:
            self.log.request_resume()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
