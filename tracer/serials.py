"""Serials of eBPF events: 32 bits, distinct from the kernel's and from other audtrace runs'.

An audit event's identity is (node, time to the millisecond, serial). The audit tools read
the serial as 32 bits (laurel rejects a longer one, go-libaudit parses it with
`ParseUint(s, 10, 32)`, `ausearch -a` truncates it), so an eBPF serial is

    bit 31        set: the kernel's counter starts at 1 at boot and counts up, so it has
                  bit 31 clear until 2^31 audit events have been numbered since boot
    bits 25..30   a slot 0..63 this run holds for its lifetime, so two audtrace runs
                  writing at once never share a serial
    bits 0..24    a counter that wraps; the identity includes the millisecond, so a wrap
                  (2^25 events later) cannot meet the run's own earlier events

A slot is held by binding an abstract unix socket named `audtrace/serial-slot/N`: the first
free N is taken, and the kernel frees the name when the process ends however it ends
(SIGKILL included), so no stale slot outlives a run. Abstract names belong to a network
namespace: runs in different network namespaces may take the same slot, and their events
may share serials if both are written into one log.
"""

from __future__ import annotations

import errno
import socket

KERNEL_LIMIT = 1 << 31          # kernel serials below this: ours are at or above
SLOT_BITS, COUNTER_BITS = 6, 25
SLOTS = 1 << SLOT_BITS
COUNTER_MASK = (1 << COUNTER_BITS) - 1
NAME = "audtrace/serial-slot/{}"


class SlotsExhausted(OSError):
    """Every slot is held by a running audtrace in this network namespace."""

    def __str__(self) -> str:
        return str(self.strerror)


class Serials:
    """The serials of one run: `next()` gives the next one. Holds its slot until `close()`
    or the end of the process. The socket is not inherited across exec (Python's default),
    so a traced command cannot keep the slot after audtrace is gone."""

    def __init__(self, prefix: str = NAME) -> None:
        self.slot, self._sock = take_slot(prefix)
        self._base = KERNEL_LIMIT | self.slot << COUNTER_BITS
        self._n = 0

    def __iter__(self) -> Serials:
        return self

    def __next__(self) -> int:
        self._n = (self._n + 1) & COUNTER_MASK
        return self._base | self._n

    def close(self) -> None:
        self._sock.close()


def take_slot(prefix: str = NAME) -> tuple[int, socket.socket]:
    """The first free slot and the socket that holds it."""
    for slot in range(SLOTS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind("\0" + prefix.format(slot))
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                continue
            raise
        return slot, sock
    raise SlotsExhausted(errno.EADDRINUSE,
                         f"all {SLOTS} serial slots are taken: {SLOTS} audtrace runs are "
                         "writing in this network namespace already (each holds the abstract "
                         "socket @" + prefix.format("N") + ")")

