"""The command line: `audtrace SUBCOMMAND [filters] [output options]`."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click
from audtrace.compat.signals import parse_signals

VERSION = "0.1.0"
SOURCES = ("ebpf", "audit", "both")
FORMATS = ("raw", "enriched", "interpreted", "json")


def _ints(kind: str, lo: int, hi: int) -> Callable:
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


def _strs(values) -> list[str]:
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def _signals(_ctx, _param, value) -> list[int]:
    if value is None:
        return []
    try:
        return parse_signals(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _positive(_ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be positive, not {value}")
    return value


def _power_of_two(_ctx, _param, value: int) -> int:
    if value < 1 or value & (value - 1):
        raise click.BadParameter(f"must be a power of two, not {value}")
    return value


def common_options(f: Callable) -> Callable:
    """The output options every tracing subcommand shares, named as the audit tools name them."""
    opts = [
        click.option("--source", type=click.Choice(SOURCES), default="ebpf", show_default=True,
                     help="eBPF probes, kernel audit (netlink), or both merged."),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="raw",
                     show_default=True, help="auditd's RAW/ENRICHED, `ausearch -i` text, or JSON."),
        click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
                     help="Append to this log (created 0600); default stdout."),
        click.option("-k", "--key", "keys", multiple=True, help="Record key (repeatable)."),
        click.option("--duration", type=float, callback=_positive, metavar="SECONDS",
                     help="Stop after this many seconds."),
        click.option("--count", type=int, callback=_positive, metavar="N",
                     help="Stop after N events."),
        click.option("--buffer-pages", type=int, default=256, show_default=True,
                     callback=_power_of_two, metavar="N",
                     help="eBPF perf buffer pages per CPU (a power of two), as auditctl -b."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="audtrace")
def cli() -> None:
    """eBPF tracing whose output is the Linux audit log: read it with ausearch and aureport."""


@cli.command()
@click.option("--sig", "signals", callback=_signals, metavar="LIST",
              help="Signals to report: numbers or names (15,12 / TERM,USR2 / SIGTERM)."
              " Default: all.")
@click.option("--pid", "pids", multiple=True, callback=_ints("pid", 1, 4194304),
              help="Only senders with this pid (tgid).")
@click.option("--comm", "comms", multiple=True, help="Only senders with this comm.")
@click.option("--uid", "uids", multiple=True, callback=_ints("uid", 0, 4294967294),
              help="Only senders with this real uid.")
@click.option("--target-pid", "target_pids", multiple=True, callback=_ints("pid", 1, 4194304),
              help="Only signals to this pid.")
@click.option("--target-comm", "target_comms", multiple=True, help="Only signals to this comm.")
@click.option("--kernel-signals/--no-kernel-signals", default=True, show_default=True,
              help="Also report signals the kernel generates itself (faults, SIGPIPE, OOM).")
@common_options
def kill(signals, pids, comms, uids, target_pids, target_comms, kernel_signals, **common) -> None:
    """Who sends which signal to whom (kill, tkill, tgkill, sigqueue, pidfd)."""
    from audtrace.tracer.subcommands import kill as decl

    for name in (*_strs(comms), *_strs(target_comms)):
        if len(name.encode()) > 15:
            raise click.BadParameter(f"comm {name!r} is longer than 15 bytes", param_hint="--comm")
    req = decl.KillRequest(signals=signals, pids=pids, comms=_strs(comms), uids=uids,
                           target_pids=target_pids, target_comms=_strs(target_comms),
                           kernel_signals=kernel_signals)
    _run(decl.subcommand(req, list(common["keys"])), common)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text")
def doctor(fmt: str) -> None:
    """What this machine offers, and which mechanism each subcommand will use."""
    from audtrace.tracer import doctor as doc

    doc.main(fmt)


def _run(sub, common: dict) -> None:
    from audtrace.tracer.audit_netlink import AuditError
    from audtrace.tracer.probes import ProbeError
    from audtrace.tracer.session import Options, Session, SessionError
    from audtrace.tracer.sink import SinkError

    opts = Options(source=common["source"], fmt=common["fmt"], output=common["output"],
                   keys=list(common["keys"]), duration=common["duration"], count=common["count"],
                   buffer_pages=common["buffer_pages"])
    try:
        code = Session(sub, opts).run()
    except (SessionError, SinkError, ProbeError, AuditError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        click.echo(f"audtrace: {first}", err=True)
        sys.exit(1)
    sys.exit(code)


# click >= 8.2 signals a bare group invocation with its own exception
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main() -> None:
    # bad input gets one line, not click's usage block
    try:
        cli(standalone_mode=False, prog_name="audtrace")
    except _NO_ARGS_IS_HELP as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        sys.exit(0)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"audtrace: {_one_line(e)}", err=True)
        sys.exit(e.exit_code)


def _one_line(e: click.ClickException) -> str:
    msg = e.format_message()
    if isinstance(e, click.BadParameter) and e.param is not None:
        hint = e.param_hint or "/".join(getattr(e.param, "opts", [])) or e.param.name
        if isinstance(hint, (list, tuple)):
            hint = "/".join(hint)
        return f"{hint}: {e.message}"
    return msg.replace("\n", " ")


if __name__ == "__main__":
    main()
