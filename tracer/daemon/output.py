"""Where the daemon's events go: the log the configuration keeps (tracer/logfile.py carries
out its keywords), node= on every record, and every event to the plugins.

Plugins get each event as auditd gives it to them (`format = string`): its RAW lines, each
ending in a newline, whether the log took the event or not (a full disk is the log's
trouble, not the plugins'), and whatever `log_format` the log is written in.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from audtrace.compat.record import Event, format_raw
from audtrace.tracer.daemon.config import Config
from audtrace.tracer.sink import Sink, SinkError


def log_dir(path: str, group: int | None) -> None:
    """The log's directory, made when missing: 0700, or 0750 of log_group, as the log."""
    parent = os.path.dirname(path)
    if os.path.isdir(parent):
        return
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        os.chmod(parent, 0o700 if group is None else 0o750)
        if group is not None:
            os.chown(parent, -1, group)
    except OSError as e:
        raise SinkError(f"cannot make {parent} for the log: {e.strerror}") from None


class DaemonSink(Sink):
    def __init__(self, cfg: Config, notice: Callable[[str], None], plugins=None) -> None:
        path = cfg.log_file if cfg.write_logs else None
        if path is not None:
            log_dir(path, cfg.policy.group)
        super().__init__(path, cfg.log_format, cfg.policy, notice)
        self.node = cfg.node
        self.plugins = plugins
        self.raw = cfg.log_format == "raw"

    def write_many(self, events: list[Event]) -> int:
        if self.node is not None:
            for ev in events:
                ev.node = self.node
        raw = None
        if self.plugins is not None and len(self.plugins):
            raw = self.render(events, format_raw)
            self.plugins.feed(b"\n".join(raw) + b"\n")
        if self.log is None:                # write_logs = no: the plugins are the output
            n = len(events)
        else:
            n = self.log.append(raw if raw is not None and self.raw else self.render(events))
        self.count += n
        return n

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()
