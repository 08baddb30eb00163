"""What a configuration asks the daemon to run: one slot per `trace =` line, one for the
rules directory, each the declaration of a subcommand (a session.Part).

A trace line is read by the subcommand's own click command, exactly as its command line
would be (`trace = kill --sig 15,12` is `audtrace kill --sig 15,12`), with the output
options left to the daemon's log keywords. The rules directory is read as augenrules reads
/etc/audit/rules.d: the `*.rules` files in natural order (`ls -v`), a bare `-D` anywhere
not deleting what earlier files said (augenrules moves it to the top), `-e`, `-f`, `-b`
left alone as `audtrace rules` leaves them.

A slot's `key` says which slot of the next configuration takes over from it at a reload
(the n-th trace line of a subcommand, the rules); its `fingerprint` whether anything
changed: an unchanged slot keeps its program running, untouched.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from dataclasses import dataclass

import click
from audtrace.compat import rules as R
from audtrace.tracer import options
from audtrace.tracer.daemon.config import Config, ConfigError, Trace
from audtrace.tracer.session import Part

# the subcommands a trace line may run: each makes audit records for as long as it runs
TRACED = ("kill", "bind", "exec", "exit", "net", "ioctl", "clock", "watch")
NOT_TRACED = {
    "rules": "give rules as files in rules_dir (augenrules order), rules_source for --source",
    "trace": "it runs a command to its end, not a service",
    "latency": "its reports are histograms, not audit records: run it from the command line",
    "compare": "it prints a comparison at its end, not a service",
    "doctor": "not a tracing subcommand",
    "cleanup": "not a tracing subcommand",
    "daemon": "not a tracing subcommand",
}
# options of the command line that the daemon's keywords say instead
LOG_OPTIONS = {"output": "-o (the log is log_file)", "fmt": "--format (log_format)",
               "duration": "--duration (a service runs until stopped)",
               "count": "--count (a service runs until stopped)",
               "disk_full_action": "--disk-full-action (disk_full_action)",
               "disk_error_action": "--disk-error-action (disk_error_action)",
               "max_log_file": "--max-log-file (max_log_file)",
               "num_logs": "--num-logs (num_logs)"}


@dataclass(eq=False)
class Slot:
    key: str                    # "trace kill 1", "rules"
    fingerprint: tuple          # what the slot was declared from
    part: Part
    notes: tuple[str, ...] = ()  # said when it starts (rule file notices, watch's reason)


def declare(cfg: Config) -> list[Slot]:
    """Every slot of the configuration, checked; ConfigError (one line) at the first
    problem. Reads files and the kernel's capabilities, changes nothing."""
    slots: list[Slot] = []
    seen: dict[str, int] = {}
    for trace in cfg.traces:
        seen[trace.name] = seen.get(trace.name, 0) + 1
        slots.append(trace_slot(cfg, trace, seen[trace.name]))
    rules = rules_slot(cfg)
    if rules is not None:
        slots.append(rules)
    if not slots:
        raise ConfigError(cfg.path, None, None, "nothing to trace: give `trace =` lines, or"
                          f" rules in {cfg.rules_dir or 'rules_dir'}")
    return slots


def trace_slot(cfg: Config, trace: Trace, nth: int) -> Slot:
    def err(message: str) -> ConfigError:
        return ConfigError(cfg.path, trace.line, "trace", message)

    name, args = trace.name, list(trace.words[1:])
    if name in NOT_TRACED:
        raise err(f"{name}: {NOT_TRACED[name]}")
    if name not in TRACED:
        raise err(f"{name}: no such subcommand (one of {', '.join(TRACED)})")
    cmd = importlib.import_module(f"audtrace.tracer.subcommands.{name}").command
    got: dict = {}

    def capture(sub, common) -> int:
        # the declaration is made; instead of running it, keep it
        ctx = click.get_current_context()
        given = [LOG_OPTIONS[n] for n in LOG_OPTIONS
                 if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)]
        got.update(sub=sub, common=common, given=given,
                   buffer_given=ctx.get_parameter_source("buffer_bytes")
                   != click.core.ParameterSource.DEFAULT)
        return 0

    try:
        with cmd.make_context(name, args) as ctx:
            ctx.meta[options.RUNNER] = capture
            cmd.invoke(ctx)
    except SystemExit:
        pass
    except click.ClickException as e:
        raise err(f"{name}: {_one_line(e)}") from None
    except (OSError, ValueError) as e:
        raise err(f"{name}: {e}") from None
    if "sub" not in got:
        raise err(f"{name}: {' '.join(args)}: not a tracing request")
    if got["given"]:
        raise err(f"{name}: {got['given'][0]}: the daemon's keywords say that")
    common = got["common"]
    part = Part(got["sub"], list(common["keys"]), common["source"],
                common["buffer_bytes"] if got["buffer_given"] else cfg.buffer_bytes)
    return Slot(f"trace {name} {nth}", ("trace", trace.words, part.buffer_bytes), part)


def _one_line(e: click.ClickException) -> str:
    if isinstance(e, click.BadParameter) and e.param is not None:
        hint = e.param_hint or "/".join(getattr(e.param, "opts", [])) or e.param.name
        if isinstance(hint, (list, tuple)):
            hint = "/".join(hint)
        return f"{hint}: {e.message}"
    return e.format_message().replace("\n", " ")


def natural_key(name: str) -> list:
    """`ls -v`'s order: runs of digits compare as numbers (`9-x` before `10-base`)."""
    return [(0, int(t), t) if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def rule_files(directory: str) -> list[str]:
    names = [n for n in os.listdir(directory) if n.endswith(".rules")
             and os.path.isfile(os.path.join(directory, n))]
    return [os.path.join(directory, n) for n in sorted(names, key=natural_key)]


def rules_slot(cfg: Config) -> Slot | None:
    """The rules directory as one `audtrace rules` part; None when it holds no rule."""
    from audtrace.tracer.ebpf import rule_filter
    from audtrace.tracer.subcommands import rules as rules_cmd

    if cfg.rules_dir is None:
        return None
    try:
        files = rule_files(cfg.rules_dir)
    except OSError as e:
        raise cfg.error("rules_dir", f"{cfg.rules_dir}: {e.strerror}") from None
    commands: list[R.Command] = []
    tolerant = False
    try:
        for f in files:
            got = R.parse_file(f, tolerant)
            tolerant = tolerant or R.tolerant_from(got)
            # augenrules moves a bare -D to the top: it deletes nothing read before it
            commands += [c for c in got
                         if not (isinstance(c, R.Control) and c.op == "delete_all")]
    except R.RuleError as e:
        where = f"{e.path}:{e.line}" if e.line else cfg.rules_dir
        raise ConfigError(where, None, None, e.message) from None
    rules = R.rule_set(commands)
    if not rules:
        return None
    source = cfg.rules_source
    plan = rule_filter.plan(rules, ebpf=source != "audit")
    sub = rules_cmd.subcommand(plan, source, rules, rules_cmd.Refusals(commands, plan))
    if not plan.ebpf:
        sub = dataclasses.replace(sub, program=None)    # all in kernel audit: no program
    notes = tuple(rules_cmd.notices(commands))
    part = Part(sub, [], source, cfg.buffer_bytes)
    return Slot("rules", ("rules", tuple(rules), source, cfg.buffer_bytes), part, notes)
