"""The systemd unit the project ships (packaging/audtrace.service is this text, finding
`audtrace` on systemd's PATH: a `pip install .` console script, or a link to a checkout's
./audtrace in /usr/local/bin), and `audtrace daemon --install-unit`, which writes it with the
full path of the audtrace that runs the command. Each exec keeps the pid (env, the launcher,
Python), so the daemon is the unit's main process.

Type=notify: systemd counts the service started at READY=1, once every probe and rule is
live. NotifyAccess=main: only the daemon, not a plugin or an exec action, may say so.
ExecReload sends SIGHUP, as auditd's unit; SIGTERM stops it (the default KillMode signal),
and TimeoutStopSec leaves room to write what is waiting and put the audit state back.
"""

from __future__ import annotations

import os

UNIT_NAME = "audtrace.service"
SHIPPED_EXEC = "/usr/bin/env audtrace"

TEMPLATE = """\
[Unit]
Description=audtrace: eBPF tracing written as the Linux audit log
Documentation=man:auditd.conf(5)
After=local-fs.target
RequiresMountsFor=/var/log

[Service]
Type=notify
NotifyAccess=main
ExecStart={exe} daemon --config {config}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
TimeoutStartSec=300
TimeoutStopSec=60

[Install]
WantedBy=multi-user.target
"""


def text(exe: str = SHIPPED_EXEC, config: str = "/etc/audtrace/audtrace.conf") -> str:
    return TEMPLATE.format(exe=exe, config=config)


def install(unit_dir: str, exe: str, config: str) -> str:
    """Write the unit into unit_dir (0644); its path. OSError as the system says."""
    path = os.path.join(unit_dir, UNIT_NAME)
    tmp = path + ".new"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text(exe, config))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
