"""`audtrace daemon [--config FILE] [--check] [--install-unit [--unit-dir DIR]]`."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click
from audtrace.tracer.daemon import config as config_mod
from audtrace.tracer.daemon import unit


def _say(line: str) -> None:
    click.echo(f"audtrace: {line}", err=True)


def _launcher() -> str:
    """The audtrace the unit should start, by its full path: a checkout's ./audtrace when
    this runs from one, else the console script on PATH (`pip install .`)."""
    checkout = Path(__file__).resolve().parents[2] / "audtrace"
    if checkout.is_file() and os.access(checkout, os.X_OK):
        return str(checkout)
    return shutil.which("audtrace") or os.path.abspath(sys.argv[0])


@click.command("daemon")
@click.option("--config", "path", default=config_mod.DEFAULT_PATH, show_default=True,
              metavar="FILE", help="The configuration (auditd.conf's keywords, trace lines).")
@click.option("--check", is_flag=True,
              help="Read and check the configuration and rules; start nothing.")
@click.option("--install-unit", is_flag=True,
              help="Write the systemd unit (audtrace.service) that runs this audtrace with"
              " --config FILE, then exit; `systemctl daemon-reload` takes it in.")
@click.option("--unit-dir", default="/etc/systemd/system", show_default=True, metavar="DIR",
              help="Where --install-unit writes the unit.")
def command(path: str, check: bool, install_unit: bool, unit_dir: str) -> None:
    """Run as a service: the log, rotation, space actions and signals of auditd (SIGHUP
    reloads, SIGUSR1 rotates, SIGUSR2 resumes, SIGTERM stops), READY=1 to systemd."""
    if install_unit:
        try:
            where = unit.install(unit_dir, _launcher(), os.path.abspath(path))
        except OSError as e:
            _say(f"cannot write the unit into {unit_dir}: {e.strerror}")
            sys.exit(1)
        _say(f"wrote {where}; now: systemctl daemon-reload && systemctl enable --now"
             f" {unit.UNIT_NAME}")
        sys.exit(0)
    sys.exit(main(path, check))


def main(path: str, check: bool) -> int:
    from audtrace.tracer.audit.netlink import AuditError
    from audtrace.tracer.daemon import slots as slots_mod
    from audtrace.tracer.daemon.config import ConfigError
    from audtrace.tracer.daemon.notify import Notifier
    from audtrace.tracer.daemon.service import Daemon
    from audtrace.tracer.ebpf.probes import ProbeError
    from audtrace.tracer.plugins import PluginError
    from audtrace.tracer.session import SessionError
    from audtrace.tracer.sink import SinkError

    notifier = Notifier()
    # the whole configuration is read and checked before anything starts
    try:
        cfg = config_mod.read(path)
        slots = slots_mod.declare(cfg)
    except ConfigError as e:
        _say(str(e))
        notifier.send(f"STATUS=configuration error: {e}")
        return 1
    try:
        plugins = _plugins(cfg)
    except PluginError as e:
        _say(str(e))
        notifier.send(f"STATUS=configuration error: {e}")
        return 1
    for note in cfg.notes + [n for s in slots for n in s.notes]:
        _say(note)
    if check:
        names = [s.key for s in slots] + [f"plugin {n}" for n in
                                          (plugins.names() if plugins is not None else [])]
        _say(f"{path}: configuration good: {', '.join(names)}")
        return 0
    try:
        return Daemon(cfg, slots, notifier, plugins).run()
    except (SessionError, SinkError, ProbeError, AuditError, PluginError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _say(first)
        return 1


def _plugins(cfg):
    """The plugins of plugin_dir (tracer/plugins.py), checked; None without a directory
    (one with no active plugin is kept: a reload may activate one)."""
    from audtrace.tracer.plugins import Plugins
    from audtrace.tracer.session import notice

    if cfg.plugin_dir is None:
        return None
    return Plugins.from_dir(cfg.plugin_dir, cfg.max_restarts, notice)
