"""ioctl requests: the _IOC fields of a request number, and names for well-known ones.

The encoding is asm-generic's (x86, arm64): nr bits 0-7, type 8-15, size 16-29, direction
30-31 (0 none, 1 write, 2 read: from the caller's side, as _IOW/_IOR name it). Names are
the kernel's uapi macros (linux/rtc.h, asm-generic/ioctls.h, linux/fs.h, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

DIRS = {0: "none", 1: "write", 2: "read", 3: "read|write"}

# name -> request number; the values are the uapi macros expanded for asm-generic
REQUESTS: dict[str, int] = {
    # linux/rtc.h: 'p', struct rtc_time is 36 bytes
    "RTC_AIE_ON": 0x7001, "RTC_AIE_OFF": 0x7002, "RTC_UIE_ON": 0x7003, "RTC_UIE_OFF": 0x7004,
    "RTC_PIE_ON": 0x7005, "RTC_PIE_OFF": 0x7006, "RTC_WIE_ON": 0x700F, "RTC_WIE_OFF": 0x7010,
    "RTC_ALM_SET": 0x40247007, "RTC_ALM_READ": 0x80247008, "RTC_RD_TIME": 0x80247009,
    "RTC_SET_TIME": 0x4024700A, "RTC_IRQP_READ": 0x8008700B, "RTC_IRQP_SET": 0x4008700C,
    "RTC_EPOCH_READ": 0x8008700D, "RTC_EPOCH_SET": 0x4008700E,
    "RTC_WKALM_SET": 0x4028700F, "RTC_WKALM_RD": 0x80287010,
    # asm-generic/ioctls.h: terminals
    "TCGETS": 0x5401, "TCSETS": 0x5402, "TCSETSW": 0x5403, "TCSETSF": 0x5404,
    "TCGETA": 0x5405, "TCSETA": 0x5406, "TCSBRK": 0x5409, "TCXONC": 0x540A, "TCFLSH": 0x540B,
    "TIOCEXCL": 0x540C, "TIOCNXCL": 0x540D, "TIOCSCTTY": 0x540E, "TIOCGPGRP": 0x540F,
    "TIOCSPGRP": 0x5410, "TIOCOUTQ": 0x5411, "TIOCSTI": 0x5412, "TIOCGWINSZ": 0x5413,
    "TIOCSWINSZ": 0x5414, "TIOCMGET": 0x5415, "TIOCMSET": 0x5418, "FIONREAD": 0x541B,
    "TIOCLINUX": 0x541C, "TIOCCONS": 0x541D, "TIOCGSERIAL": 0x541E, "TIOCSSERIAL": 0x541F,
    "TIOCINQ": 0x541B, "FIONBIO": 0x5421, "TIOCNOTTY": 0x5422, "TIOCSETD": 0x5423,
    "TIOCGETD": 0x5424,
    "TIOCGSID": 0x5429, "TCGETS2": 0x802C542A, "TCSETS2": 0x402C542B,
    "TIOCGPTN": 0x80045430, "TIOCSPTLCK": 0x40045431, "TIOCGPTPEER": 0x5441,
    "FIONCLEX": 0x5450, "FIOCLEX": 0x5451, "FIOASYNC": 0x5452,
    # linux/fs.h
    "FIBMAP": 0x1, "FIGETBSZ": 0x2, "FS_IOC_GETFLAGS": 0x80086601,
    "FS_IOC_SETFLAGS": 0x40086602, "FICLONE": 0x40049409, "FIFREEZE": 0xC0045877,
    "FITHAW": 0xC0045878, "BLKRRPART": 0x125F, "BLKGETSIZE": 0x1260, "BLKFLSBUF": 0x1261,
    "BLKSSZGET": 0x1268, "BLKGETSIZE64": 0x80081272,
    # linux/loop.h, linux/kd.h, linux/vt.h, linux/sockios.h, linux/if_tun.h
    "LOOP_SET_FD": 0x4C00, "LOOP_CLR_FD": 0x4C01, "LOOP_CTL_GET_FREE": 0x4C82,
    "KDSETMODE": 0x4B3A, "KDGETMODE": 0x4B3B, "KDGKBMODE": 0x4B44, "KDSKBMODE": 0x4B45,
    "VT_OPENQRY": 0x5600, "VT_GETSTATE": 0x5603, "VT_ACTIVATE": 0x5606,
    "SIOCGIFCONF": 0x8912, "SIOCGIFFLAGS": 0x8913, "SIOCSIFFLAGS": 0x8914,
    "SIOCGIFADDR": 0x8915, "SIOCSIFADDR": 0x8916, "SIOCGIFINDEX": 0x8933,
    "SIOCETHTOOL": 0x8946, "TUNSETIFF": 0x400454CA,
    # linux/watchdog.h, linux/kvm.h, linux/perf_event.h
    "WDIOC_KEEPALIVE": 0x80045705, "WDIOC_SETTIMEOUT": 0xC0045706,
    "KVM_GET_API_VERSION": 0xAE00, "KVM_CREATE_VM": 0xAE01, "KVM_RUN": 0xAE80,
    "PERF_EVENT_IOC_ENABLE": 0x2400, "PERF_EVENT_IOC_DISABLE": 0x2401,
}  # fmt: skip
# value -> name; an alias listed later (TIOCINQ) does not displace the first name
NAMES: dict[int, str] = {}
for _name, _value in REQUESTS.items():
    NAMES.setdefault(_value, _name)


@dataclass(frozen=True)
class Request:
    number: int
    dir: int
    type: int
    nr: int
    size: int

    @property
    def name(self) -> str | None:
        return NAMES.get(self.number)

    def describe(self) -> str:
        """`RTC_SET_TIME` or `_IOC(write,'p',0xa,36)`, as the uapi macros would write it."""
        if self.name:
            return self.name
        t = chr(self.type) if 0x20 < self.type < 0x7F else f"0x{self.type:x}"
        quoted = f"'{t}'" if len(t) == 1 else t
        return f"_IOC({DIRS[self.dir]},{quoted},0x{self.nr:x},{self.size})"


def decode(number: int) -> Request:
    n = number & 0xFFFFFFFF
    return Request(n, n >> 30, (n >> 8) & 0xFF, n & 0xFF, (n >> 16) & 0x3FFF)


def parse(text: str) -> int:
    """A request named or numbered: `RTC_SET_TIME`, `0x4024700a`, `21505`."""
    name = text.strip().upper()
    if name in REQUESTS:
        return REQUESTS[name]
    try:
        n = int(text, 0)
    except ValueError:
        raise ValueError(f"unknown ioctl request {text!r}") from None
    if not 0 <= n <= 0xFFFFFFFF:
        raise ValueError(f"ioctl request {text!r} out of range")
    return n


# where ausearch 3.0.9 names a request otherwise (measured: it knows 19 of the table above
# and calls 0x541b by its alias)
AUSEARCH_NAMES = {0x541B: "TIOCINQ"}


def interpreted(number: int) -> str:
    """The request as `ausearch -i` names it, else as audtrace does."""
    n = number & 0xFFFFFFFF
    return AUSEARCH_NAMES.get(n) or decode(n).describe()
