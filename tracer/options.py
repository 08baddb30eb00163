"""Click options and callbacks shared by the tracing subcommands, and the call that runs one."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable

import click

SOURCES = ("ebpf", "audit", "both")
FORMATS = ("raw", "enriched", "interpreted", "json")


def ints(kind: str, lo: int, hi: int) -> Callable:
    """A click callback: comma-separated or repeated integers within [lo, hi]."""
    def convert(_ctx, param, values) -> list[int]:
        out = []
        for value in values:
            for tok in str(value).split(","):
                tok = tok.strip()
                try:
                    n = int(tok, 0)
                except ValueError:
                    raise click.BadParameter(f"{tok!r} is not a {kind}") from None
                if not lo <= n <= hi:
                    raise click.BadParameter(f"{kind} {n} out of range {lo}..{hi}")
                out.append(n)
        return out
    return convert


def strs(values) -> list[str]:
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def addresses(_ctx, _param, values) -> list[str]:
    """A click callback: IPv4/IPv6 addresses (repeated or comma lists), normalized."""
    out = []
    for text in strs(values):
        try:
            out.append(str(ipaddress.ip_address(text)))
        except ValueError:
            raise click.BadParameter(f"{text!r} is not an IPv4/IPv6 address") from None
    return out


COMM_MAX = 15       # bytes the kernel keeps of a comm (TASK_COMM_LEN less the NUL)
PID_MAX = 4194304   # PID_MAX_LIMIT on 64-bit


def comms(_ctx, _param, values) -> list[str]:
    """A click callback: comm names (repeated or comma lists), each as long as the kernel
    keeps one at most: a longer name would never match."""
    out = strs(values)
    for name in out:
        if len(name.encode()) > COMM_MAX:
            raise click.BadParameter(f"comm {name!r} is longer than {COMM_MAX} bytes")
    return out


# The process filters most subcommands take; `help` says whose pid/comm/uid it is.
def pid_option(help: str = "Only this process (tgid).", name: str = "--pid",
               dest: str = "pids") -> Callable:
    return click.option(name, dest, multiple=True, callback=ints("pid", 1, PID_MAX), help=help)


def comm_option(help: str = "Only this comm.", name: str = "--comm",
                dest: str = "comms") -> Callable:
    return click.option(name, dest, multiple=True, callback=comms, help=help)


def uid_option(help: str) -> Callable:
    return click.option("--uid", "uids", multiple=True, callback=ints("uid", 0, 4294967294),
                        help=help)


def positive(_ctx, param, value):
    if value is not None and not value > 0:  # `not >`: also refuses nan
        raise click.BadParameter(f"must be positive, not {value}")
    return value


def audit_keys(_ctx, _param, values: tuple[str, ...]) -> tuple[str, ...]:
    """The kernel stores a rule's keys in one field, joined by \\x01, of at most 256 bytes:
    refuse more here rather than once BPF and audit are set up."""
    joined = "\x01".join(values).encode()
    if len(joined) > 256:
        raise click.BadParameter(f"keys take {len(joined)} bytes together (joined by \\x01);"
                                 " the kernel's limit is 256")
    return values


_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def buffer_size(_ctx, _param, value: str) -> int:
    """`32`, `32M`, `512K`, `1G` -> bytes (a bare number is MiB)."""
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in ("K", "M", "G") else ""
    num = text[: len(text) - len(unit)]
    if not num.isdigit() or int(num) == 0:
        raise click.BadParameter(f"{value!r} is not a size: say 32, 32M, 512K or 1G")
    size = int(num) * _UNITS[unit]
    if size > 4 << 30:
        raise click.BadParameter(f"{value!r} is more than 4G")
    return size


def log_action(setting: str) -> Callable:
    """A click callback: an auditd-style action for `setting` (tracer/log_policy.py)."""
    def convert(_ctx, _param, value: str):
        from audtrace.tracer.log_policy import parse_action
        try:
            return parse_action(value, setting)
        except ValueError as e:
            raise click.BadParameter(str(e).removeprefix(setting + " ")) from None
    return convert


def log_policy(common: dict):
    """-o's Policy from the log options; a log option without -o is a usage error."""
    from audtrace.tracer.log_policy import MIB, Policy

    full, error = common["disk_full_action"], common["disk_error_action"]
    size, num = common["max_log_file"], common["num_logs"]
    if common["output"] in (None, "-"):
        if size is not None or num is not None or full.name != "ignore" \
                or error.name != "ignore":
            raise click.UsageError("--disk-full-action, --disk-error-action, --max-log-file"
                                   " and --num-logs are for a log file: add -o FILE")
        return None
    rotating = size is not None or full.name == "rotate"
    if num is not None and not rotating:
        raise click.UsageError("--num-logs needs --max-log-file or --disk-full-action rotate")
    return Policy(disk_full_action=full, disk_error_action=error,
                  max_log_file=(size or 0) * MIB,
                  num_logs=(num or 5) if rotating else 0)


def common_options(f: Callable) -> Callable:
    """The output options every tracing subcommand shares, named as the audit tools name them."""
    opts = [
        click.option("--source", type=click.Choice(SOURCES), default="ebpf", show_default=True,
                     help="eBPF probes, kernel audit (netlink), or both merged."),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="raw",
                     show_default=True, help="auditd's RAW/ENRICHED, `ausearch -i` text, or JSON."),
        click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
                     help="Append to this log (created 0600); default stdout."),
        click.option("--disk-full-action", default="ignore", show_default=True,
                     callback=log_action("disk_full_action"), metavar="ACTION",
                     help="When -o's disk is full: ignore (go on tracing, count what is not"
                     " written, say so in the log once there is room), syslog, suspend,"
                     " rotate, exec:/path, stop."),
        click.option("--disk-error-action", default="ignore", show_default=True,
                     callback=log_action("disk_error_action"), metavar="ACTION",
                     help="When writing -o fails otherwise (EIO): ignore, syslog, suspend,"
                     " exec:/path, stop."),
        click.option("--max-log-file", type=click.IntRange(1), metavar="MB",
                     help="Rotate -o at this size: FILE.1 ... FILE.N-1, oldest last."),
        click.option("--num-logs", type=click.IntRange(2, 999), metavar="N",
                     help="Log files kept by rotation, the current one included (default 5)."),
        click.option("-k", "--key", "keys", multiple=True, callback=audit_keys,
                     help="Record key (repeatable)."),
        click.option("--duration", type=float, callback=positive, metavar="SECONDS",
                     help="Stop after this many seconds."),
        click.option("--count", type=int, callback=positive, metavar="N",
                     help="Stop after N events."),
        click.option("-b", "--buffer", "buffer_bytes", default="32M", show_default=True,
                     callback=buffer_size, metavar="SIZE",
                     help="Room for eBPF events waiting to be written, all CPUs together"
                     " (32M, 512K; rounded up to a power of two), as auditctl -b sizes"
                     " audit's backlog."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


RUNNER = "audtrace.runner"


def run(sub, common: dict, status: Callable[[int], int] | None = None) -> None:
    """Run a declared subcommand with the common options; errors become one line.
    `status` may change the exit status of a run that ended (`rules -c`)."""
    from audtrace.tracer.audit.netlink import AuditError
    from audtrace.tracer.ebpf.probes import ProbeError
    from audtrace.tracer.session import Options, Session, SessionError
    from audtrace.tracer.sink import SinkError

    # `audtrace compare` runs the same declarations its own way (ctx.meta[RUNNER])
    ctx = click.get_current_context(silent=True)
    runner = ctx.meta.get(RUNNER) if ctx is not None else None
    try:
        if runner is not None:
            code = runner(sub, common)
        else:
            opts = Options(source=common["source"], fmt=common["fmt"], output=common["output"],
                           keys=list(common["keys"]), duration=common["duration"],
                           count=common["count"], buffer_bytes=common["buffer_bytes"],
                           log=log_policy(common))
            code = Session(sub, opts).run()
    except (SessionError, SinkError, ProbeError, AuditError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        click.echo(f"audtrace: {first}", err=True)
        sys.exit(1)
    sys.exit(status(code) if status is not None else code)


