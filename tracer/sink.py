"""Where records go: stdout or a log file, in one of four formats."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from audtrace.compat.record import Event

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
    """Appends formatted events. A log file is created 0600 and never truncated."""

    def __init__(self, path: str | None, fmt: str) -> None:
        if fmt not in FORMATS:
            raise SinkError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
        module, func = FORMATS[fmt]
        self.format: Callable[[Event], str | bytes] = getattr(importlib.import_module(module), func)
        self.path = path
        self.count = 0
        if path is None or path == "-":
            self.fd = sys.stdout.fileno()
            self.owned = False
        else:
            try:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                self.fd = os.open(path, flags, 0o600)
            except OSError as e:
                raise SinkError(f"cannot write {path}: {e.strerror}") from None
            try:
                # some files open for writing yet refuse every write (/proc/version):
                # find out now, before anything is set up
                os.write(self.fd, b"")
            except OSError as e:
                os.close(self.fd)
                raise SinkError(f"cannot write {path}: {e.strerror}") from None
            self.owned = True

    def write(self, ev: Event) -> None:
        self.write_many([ev])

    def write_many(self, events: list[Event]) -> None:
        """The events, formatted, in one write."""
        fmt = self.format
        parts = [fmt(ev) for ev in events]
        if parts and isinstance(parts[0], bytes):
            data = b"\n".join(parts) + b"\n"
        else:
            # interpreted text may carry undecodable bytes of the traced programs: keep them
            data = ("\n".join(parts) + "\n").encode(errors="surrogateescape")
        while data:
            n = os.write(self.fd, data)
            data = data[n:]
        self.count += len(events)

    def close(self) -> None:
        if self.owned:
            os.close(self.fd)
            self.owned = False
