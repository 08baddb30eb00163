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
    from audtrace.tracer import probes, system
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
        from audtrace.compat import tables

        defines: dict[str, int | str] = {}
        nargs = {}
        for name in spec.syscalls:
            nr = tables.syscall_number(tables.host_arch(), name)
            defines[f"NR_{name.upper()}"] = -1 if nr is None else nr
            if nr is not None:
                nargs[nr] = probes.syscall_arity(root, name)
        defines.update(spec.defines)
        text = (
            layout.prelude()
            + "".join(f"#define {k} {v}\n" for k, v in defines.items())
            + probes._nargs_function(nargs)
            + probes.expand_includes(spec.source)
        )
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
        b["events"].open_perf_buffer(lambda *_a: None, page_cnt=256)
        lap("perf_buffer")
        b.cleanup()
    json.dump({"steps": steps, "memory_mib": memory}, sys.stdout)


if __name__ == "__main__":
    main()
