"""Where `audtrace kill`'s start-up goes, step by step, in one process (run by bench.py).

Prints one JSON object: seconds per step and the resident memory after each. BCC's
`BPF(text=...)` compiles the C with its built-in clang/LLVM and, for RAW_TRACEPOINT_PROBE
functions only, also loads and attaches them; the sys_enter/sys_exit programs are loaded
(verifier) by `load_func` and attached separately, so compile and load can be told apart.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time


def rss_mib() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def main() -> None:
    steps: dict[str, float] = {}
    memory: dict[str, dict[str, float]] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = now - t
        memory[name] = rss_mib()
        t = now

    import click  # noqa: F401  (what the CLI imports before anything is traced)
    from audtrace.tracer import cli  # noqa: F401

    lap("import_cli")
    from audtrace.tracer.ebpf import features, probes, system
    from audtrace.tracer.subcommands import kill

    lap("import_tracer")
    import bcc

    lap("import_bcc")
    import pyroute2  # noqa: F401  (only --source audit|both needs it)

    lap("import_pyroute2")
    layout = probes.load_layout()
    lap("btf_offsets")
    spec = kill.program(kill.KillRequest(signals=[15, 12]))
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(system.tracefs_mounted(lambda _m: None))
        stack.enter_context(system.header_tree_for_bcc(system.find_header_tree()))
        lap("tracefs_and_headers")
        features = features.optional_features(layout)
        text = probes.program_text(spec, layout, root, probes.DEFAULT_BUFFER, features)
        lap("source_text")
        b = bcc.BPF(text=text, cflags=["-w"])
        lap("bpf_compile")  # + load/attach of the one raw tracepoint program
        fns = [b.load_func(n, bcc.BPF.TRACEPOINT) for n in (spec.enter_fn, spec.exit_fn)]
        lap("bpf_load")
        for name in spec.syscalls:
            if (root / "events/syscalls" / f"sys_enter_{name}").is_dir():
                b.attach_tracepoint(tp=f"syscalls:sys_enter_{name}", fn_name=fns[0].name)
                b.attach_tracepoint(tp=f"syscalls:sys_exit_{name}", fn_name=fns[1].name)
        lap("bpf_attach")
        if "USE_RINGBUF" in features:
            b["events"].open_ring_buffer(lambda *_a: 0)
        else:
            b["events"].open_perf_buffer(lambda *_a: None, page_cnt=256)
        lap("event_buffer")
        b.cleanup()
    json.dump({"steps": steps, "memory_mib": memory}, sys.stdout)


if __name__ == "__main__":
    main()
