"""What audtrace needs of the system to compile and attach BPF, set up and put back.

- tracefs: BCC reads tracepoint formats and ids there; mounted when missing, unmounted at exit
  (recorded in the journal first: see journal.py); so is the tracefs the kernel mounts below
  debugfs when BCC looks there.
- a kernel header tree: BCC refuses to compile without one. The running kernel's own tree is
  used when installed. Otherwise a distribution header tree is presented to the compiler
  (Debian splits it into -<flavour> and -common packages, merged here with symlinks in a
  private temporary directory, removed at exit). Such a tree serves only to compile: struct
  offsets come from BTF (see layout.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from audtrace.tracer.audit import cleanup, journal

TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def tracefs_root() -> Path | None:
    for p in (TRACEFS, DEBUGFS_TRACING):
        try:
            if (p / "events").is_dir():
                return p
        except PermissionError:   # mounted, but not ours to read (not root)
            return None
    return None


def _hold_tracing_automount(holder: str, mine: journal.Journal) -> bool:
    """Where debugfs is mounted (systemd mounts it), the kernel mounts tracefs at its
    `tracing` the first time a path below it is looked up, and leaves it there. BCC's C side
    reads tracepoint ids there whenever the path exists, and so does tracefs_root(): recorded
    as audtrace's mount before anything looks, it goes with the last run that holds it. One
    there already is joined when an audtrace run made it, else left alone."""
    point = str(DEBUGFS_TRACING)
    if cleanup.is_mounted(point, "tracefs"):
        return journal.hold_mount(holder, point, "tracefs", join=True)
    if not cleanup.is_mounted(str(DEBUGFS_TRACING.parent), "debugfs"):
        return False
    mine.mounts[point] = journal.Held({"fstype": "tracefs"}, [holder])
    journal.hold_mount(holder, point, "tracefs", join=False)
    return True


@contextlib.contextmanager
def tracefs_mounted(notice) -> Iterator[Path]:
    """Yield the tracefs root, mounting tracefs for the duration when it is not mounted.

    The mount is in the journal before it is made, so a run killed meanwhile does not leave
    it for good; a run that finds it made by another run holds it too, and it goes with the
    last of them (cleanup.leave). A tracefs mounted by anyone else is left alone. So is
    debugfs's automount of tracefs, which BCC triggers (_hold_tracing_automount)."""
    holder = journal.new_holder()
    # `mine` unmounts at exit what this run mounted, also when the journal's lock was not
    # had in time
    mine = journal.Journal()
    held = _hold_tracing_automount(holder, mine)
    try:
        root = tracefs_root()
        if root is not None:
            held = journal.hold_mount(holder, str(root), "tracefs", join=True) or held
            yield root      # not audtrace's mount (unless joined): left alone
            return
        mine.mounts[str(TRACEFS)] = journal.Held({"fstype": "tracefs"}, [holder])
        journal.hold_mount(holder, str(TRACEFS), "tracefs", join=False)
        held = True
        if _libc.mount(b"nodev", str(TRACEFS).encode(), b"tracefs", 0, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot mount tracefs at {TRACEFS}: {os.strerror(err)}")
        # inside the try: a notice that cannot be written (stderr full or closed) must not
        # leave tracefs mounted
        notice(f"mounted tracefs at {TRACEFS} (unmounted at exit)")
        yield TRACEFS
    finally:
        if held:
            cleanup.leave(holder, mine, notice)


@dataclass
class HeaderTree:
    kind: str           # "native", "foreign" (another kernel's headers: compile only) or "none"
    path: str | None
    note: str


def _complete(tree: Path) -> bool:
    return (tree / "include/linux/kconfig.h").is_file()


def _common_of(flavour_dir: Path) -> Path | None:
    """Debian's linux-headers-X-amd64 pairs with linux-headers-X-common."""
    base, _, _flavour = flavour_dir.name.rpartition("-")
    for cand in (flavour_dir.with_name(base + "-common"), flavour_dir.with_name(base)):
        if cand != flavour_dir and _complete(cand):
            return cand
    return None


def find_header_tree() -> HeaderTree:
    release = platform.release()
    native = Path("/lib/modules") / release
    for sub in ("source", "build"):
        if _complete(native / sub):
            return HeaderTree("native", None, f"headers of the running kernel ({native / sub})")
    candidates = sorted(Path("/usr/src").glob("linux-headers-*"), reverse=True)
    for cand in candidates:
        configured = (cand / "include/generated/autoconf.h").is_file()
        if configured and (_complete(cand) or _common_of(cand)):
            return HeaderTree("foreign", str(cand),
                              f"no headers for {release}; compiling against {cand.name}"
                              " (struct offsets from BTF)")
    return HeaderTree("none", None, f"no kernel header tree for {release} and none in /usr/src")


def _link_children(src: Path, dst: Path, skip: set[str]) -> None:
    for entry in src.iterdir():
        if entry.name not in skip:
            (dst / entry.name).symlink_to(entry)


def _merge_tree(flavour: Path, common: Path, out: Path) -> None:
    """One tree with -common's sources and the flavour's generated files, by symlinks."""
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    _link_children(common, out, {"include", "arch"})
    for name in (".config", "Module.symvers"):
        if (flavour / name).exists():
            (out / name).symlink_to(flavour / name)
    (out / "include").mkdir()
    _link_children(common / "include", out / "include", set())
    for gen in ("generated", "config"):
        if (flavour / "include" / gen).exists():
            (out / "include" / gen).symlink_to(flavour / "include" / gen)
    (out / "arch").mkdir()
    _link_children(common / "arch", out / "arch", {arch})
    (out / "arch" / arch).mkdir()
    _link_children(common / "arch" / arch, out / "arch" / arch, {"include"})
    (out / "arch" / arch / "include").mkdir()
    _link_children(common / "arch" / arch / "include", out / "arch" / arch / "include", set())
    gen = flavour / "arch" / arch / "include" / "generated"
    if gen.exists():
        (out / "arch" / arch / "include" / "generated").symlink_to(gen)


@contextlib.contextmanager
def header_tree_for_bcc(tree: HeaderTree) -> Iterator[None]:
    """Point BCC at the header tree (BCC_KERNEL_SOURCE) for the duration."""
    if tree.kind != "foreign" or tree.path is None:
        yield
        return
    flavour = Path(tree.path)
    tmp = None
    if _complete(flavour):
        path = str(flavour)
    else:
        common = _common_of(flavour)
        assert common is not None
        tmp = tempfile.mkdtemp(prefix="audtrace-kernel-tree-")
        _merge_tree(flavour, common, Path(tmp))
        path = tmp
    old = os.environ.get("BCC_KERNEL_SOURCE")
    os.environ["BCC_KERNEL_SOURCE"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BCC_KERNEL_SOURCE", None)
        else:
            os.environ["BCC_KERNEL_SOURCE"] = old
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
