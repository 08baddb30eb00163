"""`audtrace rules` against kernel audit running the same rules, and `auditctl -l` wording.

With `--source both` the kernel loads every rule exactly as auditctl would, while the eBPF
filters run the rules audtrace placed in eBPF: for each action (a fresh process, started
once tracing is live) the eBPF event and the kernel's event are compared field by field.
Rules audtrace places in kernel audit are checked in the default mode: their events reach
the stream from the kernel, and eBPF reports nothing for them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audtrace.compat import rules as R
from audtrace.compat.record import parse_line, split_fields
from helpers import REPO, wait_for

pytestmark = pytest.mark.kernel

ACTOR = Path(__file__).with_name("rules_actor.py")
STIG = REPO / "tests/data/stig-style.rules"
# SYSCALL fields that differ for a stated reason: items= counts the PATH records the kernel
# writes (eBPF writes SYSCALL and PROCTITLE only); src marks eBPF records
NOT_COMPARED = {"items", "src"}
SEED_KEYS = {"seed-kill", "seed-bind", "seed-exit", "seed-setuid", "seed-net", "seed-watch"}


def act(*args: str) -> list[tuple[int, str]]:
    out = subprocess.run(
        [sys.executable, str(ACTOR), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert out.returncode == 0, out.stderr
    return [tuple(e) for e in json.loads(out.stdout.strip().splitlines()[-1])["events"]]


def events(text: str) -> list[tuple[tuple, list[tuple[str, dict[str, str]]]]]:
    out: dict[tuple, list] = {}
    for line in text.splitlines():
        if line.strip():
            _n, rtype, sec, msec, serial, body = parse_line(line)
            out.setdefault((sec, msec, serial), []).append((rtype, dict(split_fields(body))))
    return list(out.items())


def syscalls_of(evs, pid: int, key: str, source: str) -> list:
    want_src = source == "ebpf"
    return [
        (i, r)
        for i, r in evs
        if r[0][0] == "SYSCALL"
        and r[0][1].get("pid") == str(pid)
        and r[0][1].get("key") == f'"{key}"'
        and (r[0][1].get("src") == "ebpf") == want_src
    ]


def compare(e, a, keys: set[str], titles: set[str]) -> list[str]:
    """Field by field. The key is compared unless the kernel's event carries a key none of
    our rules has: a rule someone else loaded earlier in the kernel's list matched first.
    PROCTITLE: the kernel caches a task's title at its first logged event and never
    refreshes it, so after an execve it may repeat an earlier event's title (`titles`)."""
    (e_id, e_recs), (a_id, a_recs) = e, a
    diffs = []
    skip = set(NOT_COMPARED)
    if a_recs[0][1].get("key") not in keys:
        skip.add("key")
    a_title = next((f.get("proctitle") for t, f in a_recs if t == "PROCTITLE"), None)
    if a_title in titles:
        skip.add("proctitle")
    e_ms, a_ms = e_id[0] * 1000 + e_id[1], a_id[0] * 1000 + a_id[1]
    if not 0 <= e_ms - a_ms <= 10:  # audit's coarse clock may be a tick earlier
        diffs.append(f"time {e_ms} vs audit {a_ms}")
    a_main = [(t, f) for t, f in a_recs if t in ("SYSCALL", "PROCTITLE")]
    if [t for t, _ in e_recs] != [t for t, _ in a_main]:
        diffs.append(f"records {[t for t, _ in e_recs]} vs audit {[t for t, _ in a_recs]}")
    for (_et, ef), (at, af) in zip(e_recs, a_main, strict=False):
        for name in (set(ef) | set(af)) - skip:
            if ef.get(name) != af.get(name):
                diffs.append(f"{at}.{name}: ebpf {ef.get(name)} audit {af.get(name)}")
    return diffs


def check_same(log_text: str, pid: int, key: str, keys: set[str]) -> None:
    # kernel audit relayed nothing: the relay filter refused the kernel's events (tests/run
    # runs one suite at a time, so nothing else switches audit off meanwhile)
    assert any(ln and not ln.endswith(" src=ebpf") for ln in log_text.splitlines()), log_text
    evs = events(log_text)
    e = syscalls_of(evs, pid, key, "ebpf")
    nrs = {r[0][1]["syscall"] for _i, r in e}
    a = [
        (i, r)
        for i, r in evs
        if r[0][0] == "SYSCALL"
        and r[0][1].get("pid") == str(pid)
        and r[0][1]["syscall"] in nrs
        and r[0][1].get("src") != "ebpf"
    ]
    assert e, f"eBPF wrote nothing for pid {pid} key {key}"
    assert a, f"kernel audit wrote nothing for pid {pid} key {key}"
    assert len(e) == len(a), f"ebpf {len(e)} vs audit {len(a)} events, pid {pid} key {key}"
    # paired by syscall, then by time (the two stamps may sit a tick apart)
    e.sort(key=lambda x: (int(x[1][0][1]["syscall"]), x[0]))
    a.sort(key=lambda x: (int(x[1][0][1]["syscall"]), x[0]))
    for x, y in zip(e, a, strict=True):
        earlier = {
            f["proctitle"]
            for i, r in evs
            if r[0][1].get("pid") == str(pid) and r[0][1].get("src") != "ebpf" and i < y[0]
            for t, f in r
            if t == "PROCTITLE"
        }
        assert compare(x, y, {f'"{k}"' for k in keys}, earlier) == [], (key, pid)


@pytest.fixture
def seeds(tmp_path):
    """The rule lines administrators write, on files this test owns."""
    true_copy = tmp_path / "true-copy"
    shutil.copy("/usr/bin/true", true_copy)
    suid = tmp_path / "id-suid"
    shutil.copy("/usr/bin/id", suid)
    os.chmod(suid, 0o4755)
    os.chmod(tmp_path, 0o755)
    sshd = tmp_path / "sshd_config"
    sshd.write_text("# test\n")
    text = (
        "\n".join(
            [
                "-D",
                "-a always,exit -F arch=b64 -S kill -F a1=15 -k seed-kill",
                "-a always,exit -F arch=b64 -S bind -k seed-bind",
                f"-a always,exit -F arch=b64 -S exit_group -F exe={true_copy} -k seed-exit",
                "-a always,exit -F arch=b64 -S execve -C uid!=euid -F euid=0 -k seed-setuid",
                "-a always,exit -F arch=b64 -S accept,accept4,connect -k seed-net",
                f"-w {sshd} -p warx -k seed-watch",
            ]
        )
        + "\n"
    )
    f = tmp_path / "seeds.rules"
    f.write_text(text)
    return {"file": f, "true": true_copy, "suid": suid, "sshd": sshd}


def test_explain_places_the_seeds(seeds):
    out = subprocess.run(
        [str(REPO / "audtrace"), "rules", "-R", str(seeds["file"]), "--explain"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("rule ")]
    where = [ln.split()[2] for ln in lines]
    assert where == ["ebpf"] * 5 + ["audit"]
    # the eBPF rules that the watch overlaps (bind: write class, execve: x) are copied into
    # the kernel as `never` before it, so no event is written twice
    assert "-a never,exit -F arch=b64 -S bind" in out.stdout
    assert "-a never,exit -F arch=b64 -S execve -C uid!=euid -F euid=0" in out.stdout


def test_seed_rules_match_kernel_audit(tracers, tmp_path, seeds):
    log = tmp_path / "both.log"
    t = tracers(["rules", "-R", str(seeds["file"]), "--source", "both"], log)
    acts = {
        "seed-kill": act("kill"),
        "seed-bind": act("bind"),
        "seed-net": act("net"),
        "seed-exit": act("exec", str(seeds["true"])),
        "seed-setuid": act("setuid", str(seeds["suid"])),
    }
    want = sum(len(v) for v in acts.values())
    assert wait_for(lambda: t.text().count("src=ebpf") >= 2 * want, 30)
    assert t.stop() == 0
    text = log.read_text()
    for key, evs in acts.items():
        for pid in {pid for pid, _name in evs}:
            check_same(text, pid, key, SEED_KEYS)
    setuid = syscalls_of(events(text), acts["seed-setuid"][0][0], "seed-setuid", "ebpf")
    assert setuid[0][1][0][1]["uid"] == "65534" and setuid[0][1][0][1]["euid"] == "0"
    # keys carry through: ausearch finds each eBPF event by its rule's key
    if shutil.which("ausearch"):
        for key, evs in acts.items():
            r = subprocess.run(
                ["ausearch", "-if", str(log), "-k", key, "-p", str(evs[0][0])],
                capture_output=True,
                text=True,
            )
            assert "src=ebpf" in r.stdout, (key, r.stderr)


def test_kernel_placed_rule_reaches_the_stream(tracers, tmp_path, seeds):
    log = tmp_path / "auto.log"
    t = tracers(["rules", "-R", str(seeds["file"])], log)
    ((pid, _name),) = act("write", str(seeds["sshd"]))
    assert wait_for(lambda: 'key="seed-watch"' in t.text(), 30)
    assert t.stop() == 0
    evs = events(log.read_text())
    kernel = syscalls_of(evs, pid, "seed-watch", "audit")
    assert kernel and not syscalls_of(evs, pid, "seed-watch", "ebpf")
    assert any(r[0] == "PATH" for r in kernel[0][1])


def test_stig_style_file(tracers, tmp_path):
    """The STIG-style file: the eBPF-placed rules' events equal the kernel's."""
    (tmp_path / "f").write_text("")
    log = tmp_path / "stig.log"
    t = tracers(["rules", "-R", str(STIG), "--source", "both"], log)
    acts = {
        "time-change": act("adjtimex", "--loginuid", "1000"),
        "export": act("mount", str(tmp_path), "--loginuid", "1000"),
    }
    assert wait_for(lambda: t.text().count("src=ebpf") >= 4, 30)
    assert t.stop() == 0
    text = log.read_text()
    keys = {k for r in R.rule_set(R.parse_file(STIG)) for k in r.keys}
    for key, evs in acts.items():
        check_same(text, evs[0][0], key, keys)
    notes = "\n".join(t.stderr)
    assert "-e 2 left alone" in notes and "-b 8192 left alone" in notes


# ---- auditctl -l, round trip ----------------------------------------------------------------
def _auditctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["auditctl", *args], capture_output=True, text=True, timeout=30)


def test_listing_round_trips_with_auditctl(tmp_path):
    """The STIG-style rules loaded by the real auditctl list exactly as `audtrace rules -l`
    prints them, and each listed line parses back to the same rule. Only the rules added
    here are removed (others' rules on this machine stay)."""
    ours = subprocess.run(
        [str(REPO / "audtrace"), "rules", "-R", str(STIG), "-l"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert ours.returncode == 0, ours.stderr
    mine = ours.stdout.splitlines()
    # the settings lines are the kernel's business: load only the rules, tagged
    tag = f"audtrace-rt-{os.getpid()}"
    loadable = tmp_path / "load.rules"
    lines = [ln for ln in STIG.read_text().splitlines() if ln.startswith(("-a", "-w"))]
    loadable.write_text("\n".join(f"{ln} -k {tag}" for ln in lines) + "\n")
    before = set(_auditctl("-l").stdout.splitlines())
    try:
        r = _auditctl("-R", str(loadable))
        assert r.returncode == 0, r.stderr
        listed = [
            ln for ln in _auditctl("-l").stdout.splitlines() if ln not in before and tag in ln
        ]
    finally:
        for ln in _auditctl("-l").stdout.splitlines():
            if tag in ln and ln not in before:
                args = ln.split()
                if args[0] == "-w":
                    args[0] = "-W"
                else:
                    args[0] = "-d"
                _auditctl(*args)
    strip = [ln.replace(f" -F key={tag}", "").replace(f" -k {tag}", "") for ln in listed]
    assert strip == mine
    for ln in listed:
        assert str(R.parse_line(ln)) == ln


def test_first_match_is_kept_across_the_split(tracers, tmp_path):
    """Kernel audit lets the first matching rule decide. Rule 1 runs in eBPF, rule 2 (pers=
    has no eBPF equivalent) in kernel audit, after a `never` copy of rule 1: a call both
    match is written once, with rule 1's key, by eBPF."""
    a0 = 4000000 + os.getpid() % 100000  # a pid that does not exist: unique to this test
    rules = tmp_path / "first.rules"
    rules.write_text(
        f"-a always,exit -F arch=b64 -S getpgid -F a0={a0} -k first\n"
        "-a always,exit -F arch=b64 -S getpgid -F pers=0 -k second\n"
    )
    log = tmp_path / "first.log"
    t = tracers(["rules", "-R", str(rules)], log)
    ((both, _),) = act("getpgid", str(a0))  # matches rules 1 and 2
    ((second, _),) = act("getpgid", "1")  # matches rule 2 only
    assert wait_for(lambda: 'key="second"' in t.text() and 'key="first"' in t.text(), 30)
    time.sleep(0.5)
    assert t.stop() == 0
    evs = events(log.read_text())
    mine = [
        (r[0][1]["pid"], r[0][1].get("key"), r[0][1].get("src"))
        for _i, r in evs
        if r[0][0] == "SYSCALL"
        and r[0][1].get("pid") in (str(both), str(second))
        and r[0][1].get("syscall") == "121"
    ]
    assert sorted(mine) == sorted(
        [(str(both), '"first"', "ebpf"), (str(second), '"second"', None)]
    ), mine


def test_supplementary_groups_match_as_in_the_kernel(tracers, tmp_path):
    """`-F gid=N` also matches a task whose supplementary groups hold N (groups_search)."""
    a0 = 4100000 + os.getpid() % 100000
    rules = tmp_path / "groups.rules"
    rules.write_text(f"-a always,exit -F arch=b64 -S getpgid -F a0={a0} -F gid=4242 -k supp\n")
    log = tmp_path / "groups.log"
    t = tracers(["rules", "-R", str(rules), "--source", "both"], log)
    ((member, _),) = act("getpgid-groups", str(a0))
    ((other, _),) = act("getpgid", str(a0))
    # both sources' SYSCALL records (the kernel's key may be another rule's: check_same)
    wait_for(lambda: t.text().count(f" pid={member} ") >= 2, 30)
    time.sleep(0.5)
    assert t.stop() == 0
    text = log.read_text()
    check_same(text, member, "supp", {"supp"})
    assert f"pid={other} " not in text


# ---- a real augenrules set-up: the audit package's example files, -i ----------------------
EXAMPLES = Path("/usr/share/doc/auditd/examples/rules")
COMPOSED = ("10-base-config.rules", "12-ignore-error.rules", "30-stig.rules",
            "41-containers.rules", "42-injection.rules", "43-module-load.rules")


def augenrules(files: list[Path]) -> str:
    """The files as augenrules joins them into audit.rules: in order, comments and blank
    lines dropped, -D first, the last -e last."""
    lines, minus_d, minus_e = [], [], []
    for f in files:
        for ln in f.read_text().splitlines():
            ln = ln.strip()
            if not ln or ln.startswith("#"):
                continue
            if ln == "-D":
                minus_d = [ln]
            elif ln.startswith("-e "):
                minus_e = [ln]
            else:
                lines.append(ln)
    return "\n".join(minus_d + lines + minus_e) + "\n"


def calls_by_action(text: str, pids: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
    """Per action: the sorted (syscall, key) of every SYSCALL record of its pid."""
    out = {}
    for name, pid in pids.items():
        out[name] = sorted(
            (r[0][1]["syscall"], r[0][1].get("key", ""))
            for _i, r in events(text)
            if r[0][0] == "SYSCALL" and r[0][1].get("pid") == str(pid)
        )
    return out


def test_example_rules_with_ignore_errors_load_the_rest(tracers, tmp_path):
    """The audit package's example files composed as augenrules would, with -i (from
    12-ignore-error) and a rule the kernel refuses (a directory that does not exist): each
    refused rule is reported in one line naming its file and line, the rest loads, and
    the eBPF/kernel split writes exactly the events kernel audit alone writes, key for key."""
    if not EXAMPLES.is_dir():
        pytest.skip(f"{EXAMPLES} missing (Debian's auditd ships it)")
    gone = tmp_path / "gone"
    extra = tmp_path / "35-missing.rules"
    extra.write_text(f"-a always,exit -F dir={gone}/ -F perm=wa -F key=gone\n")
    composite = tmp_path / "audit.rules"
    composite.write_text(augenrules([EXAMPLES / f for f in COMPOSED] + [extra]))
    lines = composite.read_text().splitlines()
    refusable = {i for i, ln in enumerate(lines, start=1)
                 if (d := next((w[4:] for w in ln.split() if w.startswith("dir=")), None))
                 and not Path(d).exists()}
    assert refusable and lines[max(refusable) - 1].endswith("-F key=gone")
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(tmp_path, 0o755)

    def run(source: str) -> dict[str, list[tuple[str, str]]]:
        log = tmp_path / f"{source}.log"
        t = tracers(["rules", "-R", str(composite), "--source", source], log)
        refused = [ln for ln in t.stderr if "the kernel refused" in ln]
        assert sorted(int(ln.split()[2]) for ln in refused) == sorted(refusable), refused
        assert all(ln.startswith("audtrace: line ") and f" of {composite}: " in ln
                   and ln.endswith("; left out (-i)") for ln in refused), refused
        acts = {
            "adjtimex": act("adjtimex", "--loginuid", "1000"),
            "mount": act("mount", str(work), "--loginuid", "1000"),
            "chmod": act("chmod", str(extra), "--loginuid", "1000"),
            "unlink": act("unlink", str(work), "--loginuid", "1000"),
        }
        keys = ('"time-change"', '"export"', '"perm_mod"', '"delete"')
        assert wait_for(lambda: all(k in t.text() for k in keys), 30), t.text()[-2000:]
        time.sleep(1)
        assert t.stop() == 0
        if source == "ebpf":
            assert "src=ebpf" in log.read_text()      # the split: some rules ran in eBPF
            tracing = next(ln for ln in t.stderr if ln.startswith("audtrace: tracing"))
            assert " 0 rules as eBPF filters" not in tracing
        return calls_by_action(log.read_text(), {n: evs[0][0] for n, evs in acts.items()})

    runs = {source: run(source) for source in ("ebpf", "audit")}
    assert runs["ebpf"] == runs["audit"]
    assert all(runs["audit"].values()), runs["audit"]


def test_a_refused_rule_without_ignore_errors_stops_with_its_line(tmp_path):
    rules = tmp_path / "stop.rules"
    rules.write_text(f"-a always,exit -F arch=b64 -S getpgid -k fine\n"
                     f"-a always,exit -F dir={tmp_path}/gone/ -F perm=wa -k gone\n")
    before = subprocess.run(["auditctl", "-l"], capture_output=True, text=True).stdout
    out = subprocess.run([str(REPO / "audtrace"), "rules", "-R", str(rules), "--duration", "5"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"audtrace: line 2 of {rules}: the kernel refused -w {tmp_path}/gone")
    assert "ENOENT" in last
    assert subprocess.run(["auditctl", "-l"], capture_output=True, text=True).stdout == before


def test_continue_errors_loads_the_rest_and_exits_1(tracers, tmp_path):
    rules = tmp_path / "cont.rules"
    a0 = 4200000 + os.getpid() % 100000
    rules.write_text("-c\n"
                     "-a always,exit -F arch=b64 -S getpgid -F bogus=1 -k bad\n"
                     f"-a always,exit -F dir={tmp_path}/gone/ -F perm=wa -k gone\n"
                     f"-a always,exit -F arch=b64 -S getpgid -F a0={a0} -k cont\n")
    log = tmp_path / "cont.log"
    t = tracers(["rules", "-R", str(rules)], log)
    assert f"audtrace: line 2 of {rules}: -F unknown field: bogus; left out (-c)" in t.stderr
    assert any(ln.startswith(f"audtrace: line 3 of {rules}: the kernel refused") for ln in
               t.stderr)
    ((pid, _),) = act("getpgid", str(a0))
    assert wait_for(lambda: f" pid={pid} " in t.text(), 30)
    assert t.stop() == 1
    assert t.stderr[-1] == "audtrace: 2 rules left out: exit status 1 (-c)"
