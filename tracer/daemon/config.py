"""The daemon's configuration file: auditd.conf's keywords where they mean the same, and what
audtrace runs.

    log_file = /var/log/audtrace/audit.log
    max_log_file = 8
    disk_full_action = SUSPEND
    trace = kill --sig 15,12
    trace = bind --failed
    rules_dir = /etc/audtrace/rules.d

The syntax is auditd.conf's: `keyword = value`, one a line, `#` starts a comment line,
keywords and the words of values case-insensitive (paths, names and trace lines are kept as
written). Every keyword may be given once, except `trace`. A keyword left out takes the
value Debian's auditd.conf ships (`DEFAULTS`), so an administrator's expectations hold.

Nothing here touches the system: the file is read and every value checked, so an error is
one line naming the file, the line and the keyword (`ConfigError`), before anything starts.
What the trace lines and the rules directory declare is checked in slots.py.
"""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass, field

from audtrace.tracer import options
from audtrace.tracer.log_policy import MIB, Action, Policy, group_id, parse_action, parse_space

DEFAULT_PATH = "/etc/audtrace/audtrace.conf"

# keyword -> value when it is left out: Debian's auditd.conf for auditd's keywords
DEFAULTS: dict[str, str] = {
    "log_file": "/var/log/audtrace/audit.log",
    "write_logs": "yes",
    "log_format": "RAW",
    "log_group": "root",
    "flush": "INCREMENTAL_ASYNC",
    "freq": "50",
    "max_log_file": "8",
    "num_logs": "5",
    "max_log_file_action": "ROTATE",
    "space_left": "75",
    "space_left_action": "SYSLOG",
    "admin_space_left": "50",
    "admin_space_left_action": "SUSPEND",
    "disk_full_action": "SUSPEND",
    "disk_error_action": "SUSPEND",
    "name_format": "NONE",
    "plugin_dir": "/etc/audtrace/plugins.d",
    "max_restarts": "10",
    "end_of_event_timeout": "2",
    # audtrace's own
    "rules_dir": "/etc/audtrace/rules.d",
    "rules_source": "ebpf",
    "buffer": "32M",
}
KEYWORDS = {*DEFAULTS, "name", "trace"}
# auditd.conf keywords about what audtrace does not do (the network listener, mail, the
# dispatcher's queue, kernel settings): accepted, so an auditd.conf's lines may be kept,
# and said to be left alone
NOT_AUDTRACE = {
    "local_events", "priority_boost", "verify_email", "action_mail_acct", "tcp_listen_port",
    "tcp_listen_queue", "tcp_max_per_addr", "use_libwrap", "tcp_client_ports",
    "tcp_client_max_idle", "transport", "enable_krb5", "krb5_principal", "krb5_key_file",
    "distribute_network", "q_depth", "overflow_action", "report_interval", "dispatcher",
    "disp_qos", "plugin_dir_check",
}
LOG_FORMATS = {"raw": "raw", "enriched": "enriched", "json": "json"}
NAME_FORMATS = ("none", "hostname", "fqd", "numeric", "user")
# the defaults of directories: a missing one means none is used; one named in the file
# must exist
OPTIONAL_DIRS = ("plugin_dir", "rules_dir")


class ConfigError(ValueError):
    """One line: the file, the line and the keyword, then what is wrong."""

    def __init__(self, path: str, line: int | None, key: str | None, message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


@dataclass(frozen=True)
class Trace:
    """A `trace =` line: a subcommand and its options, as on the command line."""
    words: tuple[str, ...]
    line: int

    @property
    def name(self) -> str:
        return self.words[0]


@dataclass
class Config:
    path: str
    log_file: str
    write_logs: bool
    log_format: str                     # raw, enriched or json (the Sink's names)
    policy: Policy
    node: str | None                    # node= of every record (name_format), or none
    plugin_dir: str | None              # None: no plugins
    max_restarts: int
    eoe_timeout: float
    rules_dir: str | None               # None: no rules
    rules_source: str
    buffer_bytes: int
    traces: list[Trace] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)     # keyword -> its line
    notes: list[str] = field(default_factory=list)          # said at start and reload

    def error(self, key: str, message: str) -> ConfigError:
        """An error about a keyword's value found later (a trace line, a rule)."""
        return ConfigError(self.path, self.lines.get(key), key, message)

    def log_settings(self) -> tuple:
        """What the log is made of: a reload opens it again only when this changes."""
        return (self.log_file, self.write_logs, self.log_format, self.policy)


def read(path: str) -> Config:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot read: {e.strerror}") from None
    return parse(text, path)


def parse(text: str, path: str = DEFAULT_PATH) -> Config:
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    traces: list[Trace] = []
    notes: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not key:
            raise ConfigError(path, lineno, None, f"not `keyword = value`: {line!r}")
        if not value:
            raise ConfigError(path, lineno, key, "no value after =")
        if key in NOT_AUDTRACE:
            notes.append(f"{path}:{lineno}: {key} left alone: auditd's, not audtrace's")
            continue
        if key not in KEYWORDS:
            raise ConfigError(path, lineno, key, "unknown keyword (auditd.conf's log, name and"
                              " plugin keywords, or audtrace's trace, rules_dir, rules_source,"
                              " buffer)")
        if key == "trace":
            try:
                words = tuple(shlex.split(value))
            except ValueError as e:
                raise ConfigError(path, lineno, key, str(e)) from None
            traces.append(Trace(words, lineno))
            lines.setdefault(key, lineno)
            continue
        if key in lines:
            raise ConfigError(path, lineno, key, f"given twice (first on line {lines[key]})")
        values[key], lines[key] = value, lineno
    return _build(path, {**DEFAULTS, **values}, lines, traces, notes)


def _build(path: str, v: dict[str, str], lines: dict[str, int], traces: list[Trace],
           notes: list[str]) -> Config:
    def err(key: str, message: str) -> ConfigError:
        return ConfigError(path, lines.get(key), key, message)

    def number(key: str, lo: int = 0, hi: int | None = None) -> int:
        text = v[key]
        if not text.isdigit():
            raise err(key, f"{text!r} is not a whole number")
        n = int(text)
        if n < lo or (hi is not None and n > hi):
            raise err(key, f"{n} is out of range {lo}..{hi}" if hi is not None
                      else f"{n} is less than {lo}")
        return n

    def word(key: str, choices) -> str:
        w = v[key].lower()
        if w not in choices:
            raise err(key, f"{v[key]!r}: choose one of {', '.join(choices)}")
        return w

    def yes_no(key: str) -> bool:
        return word(key, ("yes", "no")) == "yes"

    log_file = v["log_file"]
    if not os.path.isabs(log_file):
        raise err("log_file", f"{log_file!r}: give the full path")
    if os.path.isdir(log_file):
        raise err("log_file", f"{log_file} is a directory: give the log file's path")
    write_logs = yes_no("write_logs")
    log_format = LOG_FORMATS[word("log_format", ("raw", "enriched", "json"))]

    acts: dict[str, Action] = {}
    for key in ("max_log_file_action", "space_left_action", "admin_space_left_action",
                "disk_full_action", "disk_error_action"):
        try:
            acts[key] = parse_action(v[key], key)
        except ValueError as e:
            raise err(key, str(e).removeprefix(key + " ")) from None
    spaces = {}
    for key in ("space_left", "admin_space_left"):
        try:
            spaces[key] = parse_space(v[key], key)
        except ValueError as e:
            raise err(key, str(e).removeprefix(key + " ")) from None
    try:
        group = group_id(v["log_group"])
    except ValueError as e:
        raise err("log_group", str(e).removeprefix("log_group ")) from None
    flush = word("flush", ("none", "incremental", "incremental_async", "data", "sync"))
    kw = dict(max_log_file=number("max_log_file") * MIB, num_logs=number("num_logs", 0, 999),
              space_left=spaces["space_left"], admin_space_left=spaces["admin_space_left"],
              flush=flush, freq=number("freq"), group=None if group == 0 else group, **acts)
    try:
        policy = Policy(**kw)
    except ValueError as e:
        # the first word of a policy's problem is the keyword it is about; when that one
        # was left out, the line to name is that of another keyword the problem names
        key = str(e).split()[0]
        line_of = key if key in lines else next(
            (k for k in lines if k in str(e).split()), key)
        raise err(line_of, str(e).removeprefix(line_of + " ")) from None

    node = _node(word("name_format", NAME_FORMATS), v.get("name"), err)

    dirs: dict[str, str | None] = {}
    for key in OPTIONAL_DIRS:
        d = v[key]
        if not os.path.isabs(d):
            raise err(key, f"{d!r}: give the full path")
        if not os.path.isdir(d):
            if key in lines:
                raise err(key, f"{d}: no such directory")
            d = None
        dirs[key] = d
    try:
        buffer_bytes = options.buffer_size(None, None, v["buffer"])
    except Exception as e:      # click.BadParameter: one line
        raise err("buffer", getattr(e, "message", str(e))) from None
    try:
        eoe = float(v["end_of_event_timeout"])
    except ValueError:
        eoe = -1.0
    if not 0 < eoe <= 3600:
        raise err("end_of_event_timeout", f"{v['end_of_event_timeout']!r}: seconds, more than 0")
    for t in traces:
        if not t.words:
            raise ConfigError(path, t.line, "trace", "no subcommand: `trace = kill --sig 15`")
    return Config(path=path, log_file=log_file, write_logs=write_logs, log_format=log_format,
                  policy=policy, node=node, plugin_dir=dirs["plugin_dir"],
                  max_restarts=number("max_restarts"), eoe_timeout=eoe,
                  rules_dir=dirs["rules_dir"],
                  rules_source=word("rules_source", options.SOURCES),
                  buffer_bytes=buffer_bytes, traces=traces, lines=lines, notes=notes)


def _node(name_format: str, name: str | None, err) -> str | None:
    """The node= name auditd's name_format gives the machine (None: none)."""
    if name is not None and name_format != "user":
        raise err("name", "is used only with name_format = user")
    try:
        if name_format == "none":
            return None
        if name_format == "hostname":
            node = socket.gethostname()
        elif name_format == "fqd":
            node = socket.getfqdn(socket.gethostname())
        elif name_format == "numeric":
            info = socket.getaddrinfo(socket.gethostname(), None, socket.AF_UNSPEC,
                                      socket.SOCK_STREAM, 0, socket.AI_ADDRCONFIG)
            node = info[0][4][0]
        else:
            if name is None:
                raise err("name_format", "user needs `name = ...`, the machine's name")
            node = name
    except OSError as e:
        raise err("name_format", f"{name_format}: cannot resolve this machine's name:"
                  f" {e.strerror or e}") from None
    if not node or any(c.isspace() or c in "='\"" for c in node):
        raise err("name" if name_format == "user" else "name_format",
                  f"{node!r} cannot be a node name (no spaces, quotes or =)")
    return node
