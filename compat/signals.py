"""Signal names and numbers (Linux generic numbering: x86_64, i386, aarch64).

Real-time signals are named relative to the C library's SIGRTMIN/SIGRTMAX, as
``kill -l`` and ``kill -RTMIN+3`` do (glibc keeps 32 and 33 for itself, so
RTMIN is 34); 32 and 33 have no name and are written ``SIG32``/``SIG33``.
"""

from __future__ import annotations

import signal as _signal

_NAMES = (
    "SIG0", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS",
    "SIGFPE", "SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM",
    "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG",
    "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
)  # fmt: skip
_ALIASES = {"IOT": 6, "CLD": 17, "POLL": 29}

SIGRTMIN: int = int(getattr(_signal, "SIGRTMIN", 34))
SIGRTMAX: int = int(getattr(_signal, "SIGRTMAX", 64))
NSIG = 65  # valid signal numbers are 0..64


def signal_name(n: int) -> str:
    """'SIGTERM' for 15, 'SIGRTMIN+3' for 37, 'SIGRTMAX-1' for 63, 'SIG32' for 32."""
    if 0 <= n < len(_NAMES):
        return _NAMES[n]
    if SIGRTMIN <= n <= SIGRTMAX:
        # kill -l's split: the lower half counts up from RTMIN, the upper half down from RTMAX.
        if n == SIGRTMIN:
            return "SIGRTMIN"
        if n == SIGRTMAX:
            return "SIGRTMAX"
        if n - SIGRTMIN <= (SIGRTMAX - SIGRTMIN) // 2:
            return f"SIGRTMIN+{n - SIGRTMIN}"
        return f"SIGRTMAX-{SIGRTMAX - n}"
    return f"SIG{n}"


def _parse_one(token: str) -> int:
    word = token.strip()
    if not word:
        raise ValueError("empty signal in list")
    if word.isdigit():
        n = int(word)
        if n >= NSIG:
            raise ValueError(f"signal number out of range (0..{NSIG - 1}): {word!r}")
        return n
    upper = word.upper()
    bare = upper[3:] if upper.startswith("SIG") else upper
    if bare in _ALIASES:
        return _ALIASES[bare]
    for base_name, base in (("RTMIN", SIGRTMIN), ("RTMAX", SIGRTMAX)):
        if bare.startswith(base_name):
            rest = bare[len(base_name) :]
            if not rest:
                return base
            sign, digits = rest[0], rest[1:]
            if sign in "+-" and digits.isdigit():
                n = base + int(digits) if sign == "+" else base - int(digits)
                if SIGRTMIN <= n <= SIGRTMAX:
                    return n
            raise ValueError(f"real-time signal out of range: {word!r}")
    name = "SIG" + bare
    if name in _NAMES and name != "SIG0":
        return _NAMES.index(name)
    if bare.isdigit() and int(bare) < NSIG:  # "SIG32"
        return int(bare)
    raise ValueError(f"unknown signal: {word!r}")


def parse_signals(spec: str) -> list[int]:
    """'15,12' / 'TERM' / 'SIGTERM,usr2' / 'RTMIN+3' -> signal numbers, in order, no repeats.

    ValueError names the bad token in a one-line message.
    """
    out: list[int] = []
    for token in spec.split(","):
        n = _parse_one(token)
        if n not in out:
            out.append(n)
    return out
