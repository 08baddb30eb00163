"""The kernel-side conflict path (bpf/bind_conflict.c) and its choice at run time.

On the development kernel kprobes do not exist (CONFIG_KPROBES unset) and fentry loads fail
with EPERM, so the probes cannot fire here; what can be proven here is that they are placed
from this kernel's BTF and that the kernel's verifier accepts every one of them (loaded as
kprobe programs, never attached). The tests that watch them fire are marked `kprobe` and run
in the stock-kernel VM lane (vagrant/vm-lane).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from audtrace.tracer.bind import conflict as bind_conflict
from audtrace.tracer.ebpf import features, probes, system
from audtrace.tracer.ebpf import layout as kernel_layout
from audtrace.tracer.ebpf.btf import BTF, VMLINUX
from helpers import wait_for

ACTOR = Path(__file__).with_name("bind_actor.py")
PROBES = [f"{kind}__{f}" for f in bind_conflict.FUNCTIONS for kind in ("kprobe", "kretprobe")]


@pytest.mark.kernel
def test_conflict_probes_pass_this_kernels_verifier():
    from audtrace.tracer.subcommands.bind import BindRequest, program
    from bcc import BPF

    btf = BTF.load(VMLINUX)
    present = set(bind_conflict.FUNCTIONS)  # as if the kernel had all three
    mech = bind_conflict.Mechanism("kprobe", "test", bind_conflict.probe_defines(btf, present))
    spec = program(BindRequest(), mech)
    layout = kernel_layout.from_btf(btf)
    # the program as audtrace builds it (tracefs not needed: arities default to 6)
    text = probes.program_text(spec, layout, Path("/nonexistent"), probes.PAGE, [])
    autoload = BPF._trace_autoload
    BPF._trace_autoload = lambda self: None  # load, never attach: no kprobes here
    try:
        with system.header_tree_for_bcc(system.find_header_tree()):
            b = BPF(text=text.encode(), cflags=["-w"])
        try:
            for name in PROBES:
                fn = b.load_func(name.encode(), BPF.KPROBE)  # the verifier runs here
                assert fn.fd >= 0, name
        finally:
            b.cleanup()
    finally:
        BPF._trace_autoload = autoload


def test_probe_arguments_come_from_btf():
    """The argument of each probe is found by name in the function's BTF prototype."""
    btf = BTF.load(VMLINUX)
    d = bind_conflict.probe_defines(btf, set(bind_conflict.FUNCTIONS))
    params = btf.func_params("inet_csk_bind_conflict")
    tb = "tb" if "tb" in params else "tb2"
    assert d["CSK_TB(ctx)"] == f"PT_REGS_PARM{params.index(tb) + 1}(ctx)"
    assert d["BC_SK2(ctx)"] == (
        f"PT_REGS_PARM{btf.func_params('inet_bind_conflict').index('sk2') + 1}(ctx)"
    )
    assert d["UDP_SNUM(ctx)"] == (
        f"PT_REGS_PARM{btf.func_params('udp_lib_get_port').index('snum') + 1}(ctx)"
    )
    reuse_bit, size = btf.member_bits("sock_common.skc_reuse")
    assert size == 4 and d["OFF_CF_SKC_REUSE_BYTE"] == reuse_bit // 8


@pytest.mark.kernel
def test_mechanism_is_chosen_at_run_time():
    ok, why = features.kprobes_available()
    mech = bind_conflict.choose()
    if ok:
        assert mech.name == "kprobe" and mech.defines["CONFLICT_KPROBES"] == 1
    else:
        assert mech.name == "sock_diag" and why in mech.detail
        assert mech.defines == {"CONFLICT_KPROBES": 0}
    assert bind_conflict.choose("sock_diag").name == "sock_diag"


def _conflict(log: Path, proto: str, addr: str) -> dict:
    """A conflict whose actor and holder stay until the actor's bind event is in the log
    (under full emulation events arrive late; the owners are read from /proc then)."""
    p = subprocess.Popen([sys.executable, str(ACTOR), "conflict", proto, addr],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "BIND_ACTOR_LINGER": "stdin",
                              "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        d = json.loads(p.stdout.readline())
        wait_for(lambda: f"pid={d['pid']} " in log.read_text(), 60)
    finally:
        p.stdin.close()
        p.wait(timeout=60)
    return d


@pytest.mark.kprobe
def test_kernel_decision_names_the_conflicting_socket(tracers, tmp_path):
    from audtrace.compat.record import parse_line, split_fields

    log = tmp_path / "kp.log"
    tracer = tracers(["bind", "--failed"], log)
    assert any("conflicts by kprobe" in ln for ln in tracer.stderr), tracer.stderr
    print(next(ln for ln in tracer.stderr if "conflicts by" in ln))    # which functions
    tcp, udp = _conflict(log, "tcp", "127.0.0.1"), _conflict(log, "udp", "::1")
    assert tcp["errno"] == udp["errno"] == 98
    assert wait_for(lambda: log.read_text().count("type=OBJ_PID") >= 2, 30)
    assert tracer.stop() == 0
    holders = {}
    for line in log.read_text().splitlines():
        _n, rtype, *_rest, body = parse_line(line)
        if rtype == "OBJ_PID":
            f = dict(split_fields(body))
            holders[int(f["opid"])] = f
    assert tcp["holder"] in holders and udp["holder"] in holders, log.read_text()
    t = holders[tcp["holder"]]
    assert t["decision"] == '"inet_csk_bind_conflict"'
    assert t["lport"] == str(tcp["port"]) and t["state"] == '"LISTEN"'
    if "inet_bind_conflict" in features.kernel_symbols(bind_conflict.FUNCTIONS):
        # seen at the kernel's decision: the owner socket, its state and reuse flags
        assert t["how"] == '"kprobe"'
        assert t["reuse"] == "0" and t["reuseport"] == "0"
    else:  # inlined on this kernel: the decision is the kernel's, the holder sock_diag's
        assert t["how"] == '"sock_diag"'
    assert t["netns"] == f'"{os.stat("/proc/self/ns/net").st_ino}"'
    u = holders[udp["holder"]]
    # UDP: the kernel's decision by kprobe, the holder by sock_diag
    assert u["decision"] == '"udp_lib_get_port"' and u["how"] == '"sock_diag"'
