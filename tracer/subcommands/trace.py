"""`audtrace trace [--syscalls LIST] -- CMD ARGS...`: every syscall of CMD and its descendants.

Like autrace and `strace -f`, written as audit records (SYSCALL + PROCTITLE, the formats of
`audtrace rules`). The process tree is followed in the kernel: bpf/rules.c keeps a map of
traced tgids and its sched_process_fork probe adds each child of a traced process before
the child runs, so nothing is missed and no polling is involved.

CMD is forked before anything is compiled (it holds none of audtrace's descriptors) and
waits on a pipe; its pid is put in the map when the program loads, and the pipe releases
it once every probe is live. Its first traced syscalls are the end of that wait (close of
the pipe, then execve). The run ends when CMD exits, with CMD's exit status.
"""

from __future__ import annotations

import os
import shutil
import sys

import click
from audtrace.compat import rules as R
from audtrace.compat import tables
from audtrace.tracer import options
from audtrace.tracer.ebpf import rule_filter
from audtrace.tracer.session import Subcommand
from audtrace.tracer.subcommands.rules import decoder, records_for, spec_for


class Child:
    """CMD, forked and held until `release()`."""

    def __init__(self, argv: list[str]) -> None:
        path = shutil.which(argv[0])
        if path is None:
            raise click.UsageError(f"{argv[0]}: command not found")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:    # the child: wait for the go, then become CMD
            try:
                os.close(w)
                os.read(r, 1)
                os.close(r)
                os.execv(path, argv)
            finally:
                os._exit(127)
        os.close(r)
        self.pid, self._go, self.status = pid, w, None

    def release(self) -> None:
        if self._go is not None:
            os.write(self._go, b"x")
            os.close(self._go)
            self._go = None

    def finished(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                return None
            self.status = os.waitstatus_to_exitcode(status)
            if self.status < 0:             # killed by a signal: the shell's 128+N
                self.status = 128 - self.status
        return self.status

    def abandon(self) -> None:
        """audtrace failed before CMD ran: never let it run."""
        try:   # killed before the pipe closes: an EOF would let it exec
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        if self._go is not None:
            os.close(self._go)
            self._go = None


def trace_rule(syscalls: list[str]) -> R.Rule:
    """`-a always,exit -F arch=b64 -S LIST` (or -S all) as the filter of a traced tree."""
    host = tables.host_arch()
    b64, _b32 = R.machine_arches(host)
    nrs = []
    for name in syscalls:
        nr = tables.syscall_number(host, name)
        if nr is None and name.isdigit():
            nr = int(name)
        if nr is None:
            raise click.BadParameter(f"Syscall name unknown: {name}", param_hint="--syscalls")
        nrs.append(nr)
    return R.Rule("exit", "always", tuple(sorted(set(nrs))), (("arch", "=", b64),))


def subcommand(child: Child, rule: R.Rule, keys: list[str]) -> Subcommand:
    if keys:
        rule = R.Rule(rule.list, rule.action, rule.syscalls,
                      (*rule.fields, ("key", "=", R.KEY_SEP.join(keys))))
    plan = rule_filter.plan([rule])
    return Subcommand(name="trace", program=spec_for(plan, trace_tree=[child.pid]),
                      decode=decoder, to_audit=records_for(plan), started=child.release,
                      finished=child.finished, mechanism="eBPF, process tree followed at fork")


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--syscalls", "syscalls", multiple=True, metavar="LIST",
              help="Only these syscalls (names or numbers, comma-separated); default all.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@options.common_options
def command(syscalls, cmd, **common) -> None:
    """Every syscall of CMD and its descendants, as audit records: trace [opts] -- CMD ARGS."""
    if common["source"] != "ebpf":
        raise click.BadParameter("trace runs in eBPF only", param_hint="--source")
    rule = trace_rule(options.strs(syscalls))
    child = Child(list(cmd))
    try:
        sub = subcommand(child, rule, list(common["keys"]))
    except BaseException:
        child.abandon()
        raise
    try:
        options.run(sub, common)
    except SystemExit as e:
        if child.status is None and child._go is not None:   # failed before CMD ran
            child.abandon()
        sys.exit(e.code)
