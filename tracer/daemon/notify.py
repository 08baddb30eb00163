"""Telling systemd how the service is (sd_notify(3)), with no library: one datagram to the
unix socket $NOTIFY_SOCKET names (`@` for an abstract one), lines of `VARIABLE=value`.

READY=1 once every probe and rule is live; RELOADING=1 (with MONOTONIC_USEC, as systemd
asks for it) when a reload begins and READY=1 when it is done; STOPPING=1 when the daemon
stops; STATUS= a line `systemctl status` shows. The variable is read once and removed from
the environment, so that plugins and exec actions, the daemon's children, do not inherit it
(the unit also says NotifyAccess=main).
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.pop("NOTIFY_SOCKET", "")

    def __bool__(self) -> bool:
        return bool(self.address)

    def send(self, *items: str) -> bool:
        """Send the items; False when there is no socket, or systemd is not listening (a
        notification is news, not a duty: the service goes on)."""
        if not self.address:
            return False
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(addr)
                s.sendall("\n".join(items).encode())
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self, status: str) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")
