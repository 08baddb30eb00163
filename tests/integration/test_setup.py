"""The launcher (./audtrace) and scripts/setup.sh, run for real.

Tests on the repo's own .venv need it set up by scripts/setup.sh (tests/run does that); the
set-up tests work on a scratch copy of the checkout, so they prove the first-run path from a
clean tree without touching the repo's .venv.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COPIED = ("pyproject.toml", "audtrace", "scripts", "tracer", "compat", "bpf")

# Stands in for the real CLI in the scratch copy: shows what the launcher passed on.
STUB_CLI = '''import json
import sys


def main() -> int:
    print(json.dumps([sys.argv[0], sys.executable, *sys.argv[1:]]))
    return 3
'''


def stamp_hash(repo: Path) -> str:
    data = (repo / "pyproject.toml").read_bytes() + (repo / "scripts/setup.sh").read_bytes()
    return hashlib.sha256(data).hexdigest()


def stamp_of(repo: Path) -> str:
    return (repo / ".venv/.audtrace-stamp").read_text().split("\n")[0]


def run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=900, **kw,
    )


def fastest(cmd: list[str], n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, cwd=REPO, timeout=60)
        best = min(best, time.perf_counter() - t)
    return best


@pytest.fixture
def repo_venv() -> Path:
    """The repo's .venv, as scripts/setup.sh left it."""
    stamp = REPO / ".venv/.audtrace-stamp"
    if not stamp.exists() or stamp_of(REPO) != stamp_hash(REPO):
        msg = ".venv is not set up by scripts/setup.sh (run ./tests/run)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return REPO / ".venv"


def test_version(repo_venv: Path) -> None:
    r = run(REPO / "audtrace", "--version", cwd="/")
    assert r.returncode == 0, r.stderr
    assert "audtrace" in r.stdout.lower()


def test_fast_path_adds_little_to_python(repo_venv: Path) -> None:
    # The same Python entry the launcher execs, run directly: the difference is the launcher.
    direct = [
        str(repo_venv / "bin/python"), "-c",
        "import sys; del sys.path[0]; sys.argv[0] = 'audtrace'; "
        "from audtrace.tracer.cli import main; sys.exit(main())",
        "--version",
    ]
    launcher = [str(REPO / "audtrace"), "--version"]
    fastest(launcher, 1)  # warm the page cache for both
    overhead = fastest(launcher) - fastest(direct)
    assert overhead < 0.5, f"./audtrace adds {overhead:.3f} s: the fast path is not taken"


# ---- scripts/setup.sh on a scratch copy of the checkout ----------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("scripts/setup.sh needs root")
    repo = tmp_path_factory.mktemp("checkout") / "repo"
    repo.mkdir()
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, repo / name)
    (repo / "tracer/cli.py").write_text(STUB_CLI)
    r = run("bash", repo / "scripts/setup.sh", cwd=repo)
    assert r.returncode == 0, r.stderr + (repo / ".venv/setup.log").read_text()
    yield repo


def test_first_run_makes_a_working_venv(scratch: Path) -> None:
    assert stamp_of(scratch) == stamp_hash(scratch)
    r = run(
        scratch / ".venv/bin/python", "-c",
        "import bcc, click, orjson, pyroute2, audtrace.compat as c; print(c.__path__[0])",
        cwd="/",
    )
    assert r.returncode == 0, r.stderr
    # The package comes from this checkout, not from the repo the tests run in.
    assert Path(r.stdout.strip()).resolve() == scratch / "compat"


def test_setup_is_idempotent_and_quick(scratch: Path) -> None:
    venv, log = scratch / ".venv", scratch / ".venv/setup.log"
    cfg = (venv / "pyvenv.cfg").stat()
    log_before = log.read_text()

    t = time.perf_counter()
    r = run("bash", scratch / "scripts/setup.sh", cwd=scratch)
    assert r.returncode == 0, r.stderr
    assert time.perf_counter() - t < 0.5
    assert log.read_text() == log_before, "a run with a matching stamp must do nothing"

    # Without the stamp every check runs again; nothing is missing any more.
    (venv / ".audtrace-stamp").unlink()
    r = run("bash", scratch / "scripts/setup.sh", cwd=scratch)
    assert r.returncode == 0, r.stderr
    text = log.read_text()
    assert "apt: nothing missing" in text
    assert "apt-get" not in text
    after = (venv / "pyvenv.cfg").stat()
    assert (after.st_ino, after.st_mtime_ns) == (cfg.st_ino, cfg.st_mtime_ns), "venv recreated"
    assert stamp_of(scratch) == stamp_hash(scratch)


def test_apt_runs_only_for_missing_packages(scratch: Path, tmp_path: Path) -> None:
    # dpkg-query claims python3-bpfcc is not installed; apt-get only records its calls.
    shims, calls = tmp_path / "shims", tmp_path / "apt-calls"
    shims.mkdir()
    real_dpkg_query = shutil.which("dpkg-query")
    (shims / "dpkg-query").write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = python3-bpfcc ] && { printf "un "; exit 0; }; done\n'
        f'exec {real_dpkg_query} "$@"\n'
    )
    (shims / "apt-get").write_text(f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >>{calls}\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    policy = Path("/usr/sbin/policy-rc.d")
    policy_before = policy.read_bytes() if policy.exists() else None

    (scratch / ".venv/.audtrace-stamp").unlink()
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    r = run("bash", scratch / "scripts/setup.sh", cwd=scratch, env=env)
    assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("noninteractive ") and lines[0].endswith(" update")
    words = lines[1].split()
    assert words[0] == "noninteractive"
    assert {"install", "-y", "--no-install-recommends"} <= set(words)
    assert words[-1] == "python3-bpfcc" and words[-2] == "install", "installs only what is missing"
    assert "python3-bpfcc" in r.stderr  # says what it installs
    # The system's own policy-rc.d (if any) is left as it was.
    assert (policy.read_bytes() if policy.exists() else None) == policy_before
    assert stamp_of(scratch) == stamp_hash(scratch)


def test_launcher_through_symlink_and_moved_checkout(scratch: Path, tmp_path: Path) -> None:
    link = tmp_path / "bin/audtrace"
    link.parent.mkdir()
    link.symlink_to(scratch / "audtrace")
    r = run(link, "kill", "--sig", "15,12", "a b", cwd="/")
    assert r.returncode == 3, r.stderr  # the CLI's exit status passes through
    assert json.loads(r.stdout) == [
        "audtrace", str(scratch / ".venv/bin/python"), "kill", "--sig", "15,12", "a b",
    ]
    assert "setup" not in r.stderr

    # Moved with its .venv, the checkout still works without a new set-up.
    moved = scratch.with_name("moved")
    scratch.rename(moved)
    try:
        log_before = (moved / ".venv/setup.log").read_text()
        r = run(moved / "audtrace", "x", cwd="/")
        assert r.returncode == 3, r.stderr
        assert json.loads(r.stdout)[1:] == [str(moved / ".venv/bin/python"), "x"]
        assert (moved / ".venv/setup.log").read_text() == log_before
    finally:
        moved.rename(scratch)


def test_pip_install_gives_a_namespaced_console_script(tmp_path: Path) -> None:
    """`pip install .` into a venv of the system Python (BCC is a Debian package for it):
    an `audtrace` script, and the repo's folders under `audtrace.` in site-packages only."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__",
                                                             ".pytest_cache", ".ruff_cache"))
    venv = tmp_path / "venv"
    assert run("/usr/bin/python3", "-m", "venv", "--system-site-packages", venv).returncode == 0
    r = run(venv / "bin/pip", "install", "--quiet", str(src))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(venv / "bin/audtrace", "--version")
    assert r.returncode == 0 and "audtrace" in r.stdout, r.stderr
    site = next((venv / "lib").glob("python3*/site-packages"))
    for generic in ("tracer", "compat", "bpf"):
        assert not (site / generic).exists(), f"{generic} squats site-packages"
    assert (site / "audtrace/bpf/signal.c").is_file()
    assert (site / "audtrace/compat/data/syscalls-x86_64.tsv").is_file()
    # the installed copy finds its BPF sources and tables, not the checkout's
    code = ("from audtrace.tracer.ebpf import probes; from audtrace.compat import tables;"
            "print(probes.BPF_DIR, tables.syscall_number(tables.host_arch(), 'kill'))")
    r = run(venv / "bin/python", "-c", code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    bpf_dir, nr = r.stdout.split()
    assert Path(bpf_dir).resolve() == (site / "audtrace/bpf").resolve() and int(nr) > 0
