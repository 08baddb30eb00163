"""The command line: `audtrace SUBCOMMAND [filters] [output options]`.

Each tracing subcommand is declared in its own module under tracer/subcommands/ (probes,
filters, audit rules, records, and its click command); this file only gathers them.
"""

from __future__ import annotations

import importlib
import sys

import click
from audtrace.tracer.subcommands import SUBCOMMANDS

VERSION = "0.1.0"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="audtrace")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """eBPF tracing whose output is the Linux audit log: read it with ausearch and aureport."""
    if ctx.invoked_subcommand != "cleanup":
        # every subcommand first puts back what killed runs left (a tracefs mount concerns
        # eBPF-only runs too)
        from audtrace.tracer.audit import cleanup

        cleanup.at_start(lambda line: click.echo(f"audtrace: {line}", err=True))


for _name in SUBCOMMANDS:
    cli.add_command(importlib.import_module(f"audtrace.tracer.subcommands.{_name}").command,
                    _name)


cli.add_command(importlib.import_module("audtrace.tracer.daemon.command").command, "daemon")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text")
def doctor(fmt: str) -> None:
    """What this machine offers, and which mechanism each subcommand will use."""
    from audtrace.tracer import doctor as doc

    doc.main(fmt)


@cli.command("cleanup")
@click.option("--dry-run", is_flag=True, help="Say what would be undone; change nothing.")
def cleanup_command(dry_run: bool) -> None:
    """Undo what audtrace runs killed with SIGKILL left in the kernel (audit rules, the audit
    enabled flag, a tracefs mount). What live runs use, and what was there before, stays."""
    from audtrace.tracer.audit import cleanup, journal

    try:
        report = cleanup.collect(dry_run)
    except OSError as e:
        raise click.ClickException(e.strerror or str(e)) from None
    for line in report.summaries + report.details + report.failures:
        click.echo(line)
    if not report.lines:
        live = ", ".join(map(str, sorted({journal.pid_of(h) for h in journal.load().holders})))
        click.echo("nothing to undo" + (f"; live runs keep what they hold (pid {live})"
                                         if live else ""))
    sys.exit(1 if report.failures else 0)


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
