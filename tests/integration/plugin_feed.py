"""Feeds a RAW log to the plugins of a directory through tracer/plugins.py, in this process,
as the daemon does, and says what came of it as one JSON line.

    python3 plugin_feed.py PLUGIN_DIR LOG [--syslog PATH] [--max-restarts N]

The tests run it inside `unshare -m`, so that a path a plugin insists on (audisp-remote's
/etc/audit/audisp-remote.conf, syslog's /dev/log) is replaced for it and its plugins
alone. --syslog PATH: serve a syslog socket there (read by a thread all along, as a syslog
daemon would: a unix datagram socket holds few messages and a plugin's syslog() waits on a
full one) and report each message it received.
Output: {"lost": N, "backlog": N, "notices": [...], "syslog": [...]}.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("plugin_dir")
    ap.add_argument("log")
    ap.add_argument("--syslog")
    ap.add_argument("--max-restarts", type=int, default=10)
    a = ap.parse_args()
    received: list[str] = []
    stop = threading.Event()
    server = serve_syslog(a.syslog, received, stop) if a.syslog else None
    notices: list[str] = []
    with open(a.log, "rb") as f:
        text = f.read()
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
    stop.set()
    if server is not None:
        server.join(SETTLE_S)
    print(json.dumps({"lost": plugins.lost, "backlog": backlog, "notices": notices,
                      "syslog": list(received)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
