"""Feeds a RAW log to the plugins of a directory through tracer/plugins.py, in this process,
as the daemon does, and says what came of it as one JSON line.

    python3 plugin_feed.py PLUGIN_DIR LOG [--syslog PATH] [--max-restarts N]
                           [--auditd CONF_DIR --port N]

The tests run it inside `unshare -m`, so that a path a plugin insists on (audisp-remote's
/etc/audit/audisp-remote.conf, syslog's /dev/log) is replaced for it and its plugins
alone. --syslog PATH: serve a syslog socket there (read by a thread all along, as a syslog
daemon would: a unix datagram socket holds few messages and a plugin's syslog() waits on a
full one) and report each message it received. --auditd CONF_DIR --port N: first start a
receiving auditd (`auditd -n -s nochange -c CONF_DIR`, its auditd.conf listening on port
N), wait until it listens; at the end wait for its DAEMON_CLOSE (the sender gone, all it
sent handled) in LOG_FILE (--central-log), then stop it with SIGTERM.
Output: {"lost": N, "backlog": N, "notices": [...], "syslog": [...], "auditd": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from audtrace.tracer.plugins import Plugins

SETTLE_S = 20.0     # at most this long for the plugins to read everything
QUIET_S = 1.0       # the syslog socket is read until quiet this long after the end


def serve_syslog(path: str, received: list[str], stop: threading.Event) -> threading.Thread:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.1)

    def run() -> None:
        quiet_since = None
        while True:
            try:
                received.append(sock.recv(65536).decode(errors="replace"))
                quiet_since = None
                continue
            except TimeoutError:
                pass
            if stop.is_set():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= QUIET_S:
                    sock.close()
                    return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def listening(port: int) -> bool:
    """A TCP socket listens on `port` (any address), as /proc/net/tcp{,6} say."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def start_auditd(conf_dir: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(["auditd", "-n", "-s", "nochange", "-c", conf_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + SETTLE_S
    while not listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_auditd(proc)
            raise SystemExit(f"auditd does not listen on {port}: {proc.stderr.read()}")
        time.sleep(0.05)
    return proc


def stop_auditd(proc: subprocess.Popen, log: str | None = None) -> dict:
    """After the sender's DAEMON_CLOSE is in `log` (or SETTLE_S), SIGTERM; rc, stderr."""
    deadline = time.monotonic() + SETTLE_S
    while log is not None and time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(log) and b"type=DAEMON_CLOSE " in Path(log).read_bytes():
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(SETTLE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return {"rc": proc.returncode, "stderr": proc.stderr.read()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("plugin_dir")
    ap.add_argument("log")
    ap.add_argument("--syslog")
    ap.add_argument("--max-restarts", type=int, default=10)
    ap.add_argument("--auditd")
    ap.add_argument("--port", type=int)
    ap.add_argument("--central-log")
    a = ap.parse_args()
    received: list[str] = []
    stop = threading.Event()
    server = serve_syslog(a.syslog, received, stop) if a.syslog else None
    auditd = start_auditd(a.auditd, a.port) if a.auditd else None
    notices: list[str] = []
    with open(a.log, "rb") as f:
        text = f.read()
    central = None
    try:
        with Plugins.from_dir(a.plugin_dir, a.max_restarts, notices.append) as plugins:
            plugins.start()
            plugins.feed(text)
            deadline = time.monotonic() + SETTLE_S
            while time.monotonic() < deadline:
                plugins.poll()
                if plugins.backlog() == 0:
                    break
                time.sleep(0.02)
            backlog = plugins.backlog()
    finally:
        if auditd is not None:      # never left running, whatever happened
            central = stop_auditd(auditd, a.central_log)
    stop.set()
    if server is not None:
        server.join(SETTLE_S)
    print(json.dumps({"lost": plugins.lost(), "backlog": backlog, "notices": notices,
                      "syslog": list(received), "auditd": central}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
