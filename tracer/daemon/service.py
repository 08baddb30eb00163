"""`audtrace daemon`: the run a service manager keeps, as auditd is kept.

A Session of several parts (one per slot, tracer/daemon/slots.py) whose log is the
configuration's (output.py), with auditd's signals:

- SIGHUP reloads the configuration and the rules without a gap (reload.py);
- SIGUSR1 rotates the log now, between two events, or, when another program (logrotate)
  has renamed it already, opens a new log at its path;
- SIGUSR2 resumes a log its disk-full or disk-error action suspended (`auditd resume`);
- SIGTERM and SIGINT write what is waiting, put the kernel's audit state back, exit 0.

Every event also goes to the active plugins of plugin_dir (tracer/plugins.py), started
before the first event and closed after the last; what they miss is counted lost.

systemd hears READY=1 once every probe and rule is live (notify.py), RELOADING=1 and READY=1
around a reload, STOPPING=1 at the end. Every signal only sets a flag: the loop acts on it
between two turns, so nothing is done from inside a handler.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from audtrace.compat.rules import Rule
from audtrace.tracer.daemon import reload
from audtrace.tracer.daemon.config import Config
from audtrace.tracer.daemon.notify import Notifier
from audtrace.tracer.daemon.output import DaemonSink
from audtrace.tracer.daemon.slots import Slot
from audtrace.tracer.session import Options, Session, combined_source, notice
from audtrace.tracer.sink import Sink


class Daemon(Session):
    STOP_HINT = ""          # a service is stopped by its manager (SIGTERM)

    def __init__(self, cfg: Config, slots: list[Slot], notifier: Notifier,
                 plugins=None) -> None:
        parts = [s.part for s in slots]
        opts = Options(source=combined_source(parts), fmt=cfg.log_format,
                       output=cfg.log_file, buffer_bytes=cfg.buffer_bytes, log=cfg.policy,
                       eoe_timeout=cfg.eoe_timeout)
        super().__init__(None, opts, parts=parts)
        self.config = cfg
        self.slots = slots
        self.notifier = notifier
        self.plugins = plugins
        self.reload_lost = 0            # syscalls no program saw whole across a reload
        self.plugins_lost = 0           # of plugins a reload ended with their directory
        self.reloading: reload.Reload | None = None
        self._asked: set[int] = set()   # signals to act on at the next turn

    # -- the log --------------------------------------------------------------------------
    def _open_sink(self) -> Sink:
        return DaemonSink(self.config, notice, self.plugins)

    def apply_settings(self, cfg: Config) -> None:
        """A reload's log settings: the log opened anew only when they changed (the new
        one first: a log that cannot be opened leaves the one in force)."""
        self._reload_plugins(cfg)       # first: a bad plugin file leaves everything as it was
        if cfg.log_settings() != self.config.log_settings():
            new = DaemonSink(cfg, notice, self.plugins)
            self.sink.close()
            self.sink = new
        self.sink.node = cfg.node
        self.sink.plugins = self.plugins
        self.config = cfg

    def _reload_plugins(self, cfg: Config) -> None:
        """plugin_dir read anew (tracer/plugins.py: unchanged plugins get SIGHUP, as from
        auditd, changed ones are restarted, new ones started, removed ones ended)."""
        from audtrace.tracer.plugins import Plugins

        if self.plugins is None:
            if cfg.plugin_dir is not None:
                plugins = Plugins.from_dir(cfg.plugin_dir, cfg.max_restarts, notice)
                try:
                    plugins.start()
                except Exception:
                    plugins.close()     # those started end; the reload fails in one line
                    raise
                self.plugins = plugins
            return
        if cfg.plugin_dir is None:      # no plugin directory any more: every plugin ends
            self.plugins.close()
            self.plugins_lost += self.plugins.lost()
            self.plugins = None
            return
        self.plugins.max_restarts = cfg.max_restarts
        self.plugins.reload(cfg.plugin_dir)

    def _rotate_now(self) -> None:
        log = self.sink.log
        if log is None:
            notice("SIGUSR1: no log to rotate (write_logs = no)")
        elif log.moved():
            # logrotate renamed it and signals after: what was written is where it put it,
            # a new log starts at the path (renaming again would shift its files)
            if log.reopen():
                notice(f"{log.path} reopened (SIGUSR1): the log had been moved away")
        elif log.policy.num_logs < 2:
            notice("SIGUSR1: num_logs is below 2: nothing to rotate to")
        elif log.rotate():
            notice(f"{log.path} rotated (SIGUSR1)")

    # -- kernel audit rules, as a reload changes them (ruleset.py's steps) ------------------
    def add_rules(self, steps: list[tuple[str, Rule]], current: list[Rule],
                  wanted: list[Rule]) -> None:
        if not steps:
            return
        if self.audit is None:
            # the first slot of this run on kernel audit: every rule wanted is new
            self._start_audit(self.stack)
            return
        after = [r for r in current if r not in wanted] + wanted
        self.audit.update(steps, after, on_refused=self.on_refused)

    def remove_rules(self, wanted: list[Rule]) -> None:
        if self.audit is None:
            return
        gone = [("remove", r) for r in self.audit.rules if r not in wanted]
        if gone:
            self.audit.update(gone, wanted)

    # -- signals and the loop ---------------------------------------------------------------
    def _signal_handlers(self, sink: Sink) -> dict[int, Callable]:
        def ask(signum, _frame) -> None:
            self._asked.add(signum)

        return {signal.SIGINT: self._handle_signal, signal.SIGTERM: self._handle_signal,
                signal.SIGHUP: ask, signal.SIGUSR1: ask,
                signal.SIGUSR2: lambda *_: self.sink.request_resume()}

    def _live(self) -> None:
        super()._live()
        self.notifier.ready(f"tracing {self.names()}")

    def _between(self) -> None:
        if signal.SIGUSR1 in self._asked:
            self._asked.discard(signal.SIGUSR1)
            self._rotate_now()
        if signal.SIGHUP in self._asked and self.reloading is None:
            self._asked.discard(signal.SIGHUP)
            self.notifier.reloading("reloading the configuration")
            notice(f"SIGHUP: reloading {self.config.path}")
            self.reloading = reload.begin(self)
        if self.reloading is not None and reload.advance(self, self.reloading):
            self.reloading = None
        if self.plugins is not None:
            self.plugins.poll()

    def _loop(self) -> None:
        super()._loop()
        if self.reloading is not None:
            reload.abort(self, self.reloading)
            self.reloading = None

    def lost(self) -> dict[str, int]:
        out = super().lost()
        out["ebpf"] += self.reload_lost
        if self.plugins is not None or self.plugins_lost:
            out["plugins"] = self.plugins_lost + (self.plugins.lost() if self.plugins else 0)
        return out

    def run(self) -> int:
        try:
            if self.plugins is not None:
                self.plugins.start()    # before the first event, so they miss none
            return super().run()
        finally:
            if self.plugins is not None:
                self.plugins.close()    # after the last event: they get everything
                # (Session printed its totals before: the plugins' final misses follow)
                if self.plugins.lost():
                    notice(f"plugins missed {self.plugins.lost() + self.plugins_lost}"
                           " events in all")
            self.notifier.stopping("stopped")
