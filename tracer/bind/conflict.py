"""Which mechanism sees bind conflicts on this kernel, and the constants its probes need.

- "kprobe": kprobes exist; bpf/bind_conflict.c probes inet_csk_bind_conflict,
  inet_bind_conflict and udp_lib_get_port, each only if this kernel has it as a symbol of
  its own (not inlined, not renamed to a .isra/.constprop clone). Argument positions come
  from the functions' BTF prototypes, struct offsets from BTF.
- "sock_diag": no kprobes (CONFIG_KPROBES unset), or no BTF to place the arguments: the
  holder is looked up right after the failure (holders.py).
fentry/fexit would serve too; it is not built: the kernels audtrace is tested on either have
kprobes (stock distribution kernels) or refuse fentry programs as well.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from audtrace.tracer.bind.holders import TCP_STATES, HeldSocket
from audtrace.tracer.ebpf.btf import BTF, BTFError
from audtrace.tracer.ebpf.features import kernel_symbols, kprobes_available

FUNCTIONS = ("inet_csk_bind_conflict", "inet_bind_conflict", "udp_lib_get_port")
# macro -> BTF member path, for capture_owner() in bpf/bind_conflict.c
OFFSETS = {
    "OFF_CF_SKC_FAMILY": "sock_common.skc_family",
    "OFF_CF_SKC_STATE": "sock_common.skc_state",
    "OFF_CF_SKC_NUM": "sock_common.skc_num",
    "OFF_CF_SKC_DPORT": "sock_common.skc_dport",
    "OFF_CF_SKC_RCV_SADDR": "sock_common.skc_rcv_saddr",
    "OFF_CF_SKC_DADDR": "sock_common.skc_daddr",
    "OFF_CF_SKC_V6_RCV_SADDR": "sock_common.skc_v6_rcv_saddr",
    "OFF_CF_SKC_V6_DADDR": "sock_common.skc_v6_daddr",
    "OFF_CF_SKC_NET": "sock_common.skc_net",
    "OFF_CF_SK_UID": "sock.sk_uid",
    "OFF_CF_SK_SOCKET": "sock.sk_socket",
    "OFF_CF_SOCKALLOC_SOCKET": "socket_alloc.socket",
    "OFF_CF_SOCKALLOC_INODE": "socket_alloc.vfs_inode",
    "OFF_CF_INODE_INO": "inode.i_ino",
}
MAX_REG_ARGS = 6    # PT_REGS_PARM1..6


class ConflictProbeError(Exception):
    pass


@dataclass
class Conflict:
    """The kernel's own decision, seen by the kprobe path."""
    func: str
    result: int
    port: int
    owner: HeldSocket | None


def seen(x, const) -> Conflict | None:
    """The decision a bind event's extra carries (its cf_* fields), None when the probes
    saw none; `const` reads bpf/bind_conflict.c's constants (ebpf.events.Decoder.const)."""
    if not x.cf_seen:
        return None
    funcs = {const("CF_FUNC_CSK"): "inet_csk_bind_conflict",
             const("CF_FUNC_UDP"): "udp_lib_get_port"}
    return Conflict(funcs.get(x.cf_func, "?"), x.cf_result, x.cf_port, _owner(x))


def _owner(x) -> HeldSocket | None:
    if not x.cf_family:
        return None
    fam = int(x.cf_family)
    raw_l, raw_r = bytes(x.cf_laddr), bytes(x.cf_raddr)
    if fam == socket.AF_INET6:
        laddr, raddr = str(ipaddress.IPv6Address(raw_l)), str(ipaddress.IPv6Address(raw_r))
    else:
        laddr, raddr = str(ipaddress.IPv4Address(raw_l[:4])), str(ipaddress.IPv4Address(raw_r[:4]))
    return HeldSocket(proto="tcp", family=fam, state=TCP_STATES.get(x.cf_state, str(x.cf_state)),
                      laddr=laddr, lport=int(x.cf_lport),
                      raddr=raddr, rport=socket.ntohs(int(x.cf_rport)),
                      inode=int(x.cf_inode), uid=int(x.cf_uid), how="kprobe",
                      reuse=int(x.cf_reuse), reuseport=int(x.cf_reuseport))


@dataclass
class Mechanism:
    name: str                                 # "kprobe" or "sock_diag"
    detail: str
    defines: dict[str, int | str] = field(default_factory=dict)
    functions: tuple[str, ...] = ()


def _arg(btf: BTF, func: str, names: tuple[str, ...]) -> str:
    """PT_REGS_PARMn(ctx) of the first of `names` among func's parameters."""
    params = btf.func_params(func)
    for name in names:
        if name in params and params.index(name) < MAX_REG_ARGS:
            return f"PT_REGS_PARM{params.index(name) + 1}(ctx)"
    raise ConflictProbeError(f"{func}{tuple(params)} has none of {names}")


def probe_defines(btf: BTF, present: set[str]) -> dict[str, int | str]:
    """CONFLICT_KPROBES, HAVE_*, argument accessors and OFF_CF_* for bind_conflict.c."""
    d: dict[str, int | str] = {"CONFLICT_KPROBES": 1}
    for func in FUNCTIONS:
        d[f"HAVE_{func.upper()}"] = int(func in present)
    if "inet_csk_bind_conflict" in present:
        # 4.x-6.0: (sk, tb, relax, reuseport_ok); 6.1+: (sk, tb, tb2, ...); both buckets
        # keep the port at the same member name
        d["CSK_TB(ctx)"] = _arg(btf, "inet_csk_bind_conflict", ("tb", "tb2"))
        bucket = ("inet_bind_bucket" if "tb" in btf.func_params("inet_csk_bind_conflict")
                  else "inet_bind2_bucket")
        d["OFF_CF_TB_PORT"] = btf.offset(f"{bucket}.port")
    if "inet_bind_conflict" in present:
        d["BC_SK2(ctx)"] = _arg(btf, "inet_bind_conflict", ("sk2",))
    if "udp_lib_get_port" in present:
        d["UDP_SNUM(ctx)"] = _arg(btf, "udp_lib_get_port", ("snum",))
    for macro, path in OFFSETS.items():
        d[macro] = btf.offset(path)
    # skc_reuse:4, skc_reuseport:1, skc_ipv6only:1 share a byte
    reuse, _ = btf.member_bits("sock_common.skc_reuse")
    byte = reuse // 8
    d["OFF_CF_SKC_REUSE_BYTE"] = byte
    for macro, path in (("CF_REUSE_SHIFT", "sock_common.skc_reuse"),
                        ("CF_REUSEPORT_SHIFT", "sock_common.skc_reuseport"),
                        ("CF_IPV6ONLY_SHIFT", "sock_common.skc_ipv6only")):
        bits, _size = btf.member_bits(path)
        if bits // 8 != byte:
            raise ConflictProbeError(f"{path} is not in the byte of skc_reuse")
        d[macro] = bits % 8
    return d


def choose(force: str | None = None) -> Mechanism:
    """The mechanism for this kernel; `force="sock_diag"` skips the kprobe path."""
    off = {"CONFLICT_KPROBES": 0}
    if force == "sock_diag":
        return Mechanism("sock_diag", "asked for", off)
    ok, why = kprobes_available()
    if not ok:
        return Mechanism("sock_diag", f"no kprobes: {why}", off)
    try:
        present = kernel_symbols(FUNCTIONS)
        if not present:
            return Mechanism("sock_diag", "none of " + ", ".join(FUNCTIONS)
                             + " is a probe-able symbol", off)
        btf = BTF.load()
        defines = probe_defines(btf, present)
    except (OSError, BTFError, ConflictProbeError) as e:
        return Mechanism("sock_diag", f"kprobes exist but cannot be placed: {e}", off)
    funcs = tuple(f for f in FUNCTIONS if f in present)
    return Mechanism("kprobe", "kprobes on " + ", ".join(funcs), defines, funcs)
