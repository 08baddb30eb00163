"""What a log does when the disk says no: auditd.conf's log settings, parsed and checked.

The names and meanings are auditd.conf(5)'s (`disk_full_action = suspend`, `space_left = 5%`,
`max_log_file_action = keep_logs`); `-o`'s options and the daemon's configuration both end
in one `Policy`, which `tracer/logfile.py` carries out. Where audtrace differs:

- `stop` is audtrace's own: the run ends cleanly (everything put back), exit status 1.
- `halt` and `single` are refused: a tracer does not take the machine down. `exec` can run
  a program that does, and `stop` ends tracing.
- `email` is refused: audtrace sends no mail; `syslog` or `exec` can.
"""

from __future__ import annotations

import grp
import os
from dataclasses import dataclass, field

MIB = 1 << 20

# the actions each setting takes, as auditd.conf(5) lists them, with audtrace's `stop`
SETTINGS: dict[str, tuple[str, ...]] = {
    "disk_full_action": ("ignore", "syslog", "suspend", "rotate", "exec", "stop"),
    "disk_error_action": ("ignore", "syslog", "suspend", "exec", "stop"),
    "space_left_action": ("ignore", "syslog", "suspend", "rotate", "exec", "stop"),
    "admin_space_left_action": ("ignore", "syslog", "suspend", "rotate", "exec", "stop"),
    "max_log_file_action": ("ignore", "syslog", "suspend", "rotate", "keep_logs"),
}
REFUSED = {
    "halt": "audtrace does not shut the machine down: say stop to end tracing, or exec a"
            " program that halts",
    "single": "audtrace does not change the runlevel: say stop to end tracing, or exec a"
              " program that does",
    "email": "audtrace sends no mail: say syslog, or exec a program that mails",
}
FLUSH = ("none", "incremental", "incremental_async", "data", "sync")


@dataclass(frozen=True)
class Action:
    name: str                   # one of SETTINGS[setting]
    setting: str                # whose action: "disk_full_action"...
    path: str | None = None     # exec's program

    def __str__(self) -> str:
        word = self.setting.removesuffix("_action").replace("_", "-")
        what = f"exec {self.path}" if self.name == "exec" else self.name
        return f"{word} action {what}"


def parse_action(text: str, setting: str) -> Action:
    """`ignore`, `SUSPEND`, `exec /path` or `exec:/path` -> Action; ValueError (one line)
    for anything the setting does not take."""
    allowed = SETTINGS[setting]
    text = text.strip()
    if text[:5].lower() == "exec:":
        word, rest = "exec", text[5:]
    else:
        word, _, rest = text.partition(" ")
    name = word.lower()
    if name in REFUSED and name not in allowed:
        raise ValueError(f"{setting} {name}: {REFUSED[name]}")
    if name not in allowed:
        raise ValueError(f"{setting} {text!r}: choose one of {', '.join(allowed)}"
                         + (" (exec PATH)" if "exec" in allowed else ""))
    path = rest.strip()
    if name != "exec":
        if path:
            raise ValueError(f"{setting} {name} takes no argument, not {path!r}")
        return Action(name, setting)
    if not path:
        raise ValueError(f"{setting} exec needs a program: exec:/path/to/program")
    if not os.path.isabs(path):
        raise ValueError(f"{setting} exec {path}: give the program's full path")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ValueError(f"{setting} exec {path}: not an executable file")
    return Action(name, setting, path)


@dataclass(frozen=True)
class Space:
    """space_left / admin_space_left: MiB, or a percentage of the filesystem's size."""
    value: int
    percent: bool = False

    def bytes(self, fs_bytes: int) -> int:
        return fs_bytes * self.value // 100 if self.percent else self.value * MIB

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else f"{self.value} MiB"


def parse_space(text: str, setting: str) -> Space:
    text = text.strip()
    percent = text.endswith("%")
    num = text.removesuffix("%").strip()
    if not num.isdigit():
        raise ValueError(f"{setting} {text!r}: give MiB (75) or a percentage (5%)")
    if percent and not 1 <= int(num) <= 99:
        raise ValueError(f"{setting} {text}: a percentage is 1% to 99%")
    return Space(int(num), percent)


def _action(name: str, setting: str) -> Action:
    return Action(name, setting)


@dataclass(frozen=True)
class Policy:
    """How a log is kept. The defaults are `-o`'s: keep tracing when the disk is full or
    failing, counting what could not be written; no size limit; no forced flush."""
    disk_full_action: Action = field(default_factory=lambda: _action("ignore",
                                                                     "disk_full_action"))
    disk_error_action: Action = field(default_factory=lambda: _action("ignore",
                                                                      "disk_error_action"))
    max_log_file: int = 0               # bytes; 0: no limit
    max_log_file_action: Action = field(default_factory=lambda: _action(
        "rotate", "max_log_file_action"))
    num_logs: int = 0                   # files kept by rotate, the current one included
    space_left: Space | None = None
    space_left_action: Action = field(default_factory=lambda: _action("ignore",
                                                                      "space_left_action"))
    admin_space_left: Space | None = None
    admin_space_left_action: Action = field(default_factory=lambda: _action(
        "ignore", "admin_space_left_action"))
    flush: str = "none"
    freq: int = 0                       # events between flushes (incremental*)
    group: int | None = None            # log_group: files 0640/0440 of this group

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(problems[0])

    def problems(self) -> list[str]:
        out = []
        if self.flush not in FLUSH:
            out.append(f"flush {self.flush!r}: choose one of {', '.join(FLUSH)}")
        if self.flush.startswith("incremental") and self.freq < 1:
            out.append(f"flush {self.flush} needs freq of at least 1")
        if not 0 <= self.num_logs <= 999:
            out.append(f"num_logs {self.num_logs}: 0 to 999")
        if self.max_log_file < 0:
            out.append("max_log_file must not be negative")
        rotating = [a for a in (self.disk_full_action, self.space_left_action,
                                self.admin_space_left_action) if a.name == "rotate"]
        if self.max_log_file and self.max_log_file_action.name == "rotate":
            rotating.append(self.max_log_file_action)
        if rotating and self.num_logs < 2:
            out.append(f"{rotating[0].setting} rotate needs num_logs of 2 or more")
        return out

    @property
    def watches_space(self) -> bool:
        return self.space_left is not None or self.admin_space_left is not None


def policy_from_settings(settings: dict[str, str]) -> Policy:
    """auditd.conf's log settings (keys as auditd.conf spells them, values as written) ->
    Policy; other keys are not the log's and are left alone. ValueError, one line."""
    s = {k.lower(): v.strip() for k, v in settings.items()}
    kw: dict = {}
    for key in SETTINGS:
        if key in s:
            kw[key] = parse_action(s[key], key)
    for key in ("space_left", "admin_space_left"):
        if key in s:
            kw[key] = parse_space(s[key], key)
    for key in ("max_log_file", "num_logs", "freq"):
        if key in s:
            if not s[key].isdigit():
                raise ValueError(f"{key} {s[key]!r} is not a whole number")
            kw[key] = int(s[key]) * (MIB if key == "max_log_file" else 1)
    if "flush" in s:
        kw["flush"] = s["flush"].lower()
    if "log_group" in s:
        kw["group"] = group_id(s["log_group"])
    return Policy(**kw)


def group_id(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"log_group {name!r}: no such group") from None
