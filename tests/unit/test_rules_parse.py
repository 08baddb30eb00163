"""compat/rules.py against auditctl itself, and the placement of rules (tracer/ebpf/rule_filter.py).

Error wording is compared with what the installed auditctl prints for the same invalid
line (every line sent to auditctl here is invalid: auditctl refuses it before it talks to
the kernel, so nothing is loaded).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from audtrace.compat import rules as R
from audtrace.compat import tables
from audtrace.compat.tables import AUDIT_ARCH_X86_64
from audtrace.tracer.audit.netlink import audit_rule_msg, rule_data, rule_of
from audtrace.tracer.ebpf import rule_filter as F
from audtrace.tracer.ebpf.layout import kernel_dev
from hypothesis import given
from hypothesis import strategies as st

X86_64 = tables.host_arch() == AUDIT_ARCH_X86_64
x86_64_only = pytest.mark.skipif(not X86_64, reason="syscall numbers of x86_64")

INVALID = [
    "-a always,exit -F comm=x",
    "-a always,exit -F ses=1",
    "-a always,exit -F arch=b64 -S nosuch",
    "-a always,exit -S kill -F arch=b64",
    "-a always,exits -S kill",
    "-a always,exit -F a1",
    "-a always,exit -F a1=",
    "-a always,exit -F a1=abc",
    "-a always,exit -F perm=rz",
    "-a always,exit -F exe<3",
    "-a always,exit -C uid!=path",
    "-a always,exit -C uid<euid",
    "-a always,exit -F exit=-EFOO",
    "-k foo",
    "-a always,task -F exit=1",
    "-a always,exit -F uid=nosuchuser-audtrace",
    "-w relative",
    "-a always,exit -F arch=b64 -S kill extra",
    "-a always,user -S kill",
    "-a always,exit -F arch=b64 -S kill -F msgtype=SYSCALL",
    "-a always,exit -F arch=b64 -S kill -F inode<3",
    "-e 5",
    "-b x",
    "-Z",
]


def auditctl_error(line: str) -> str:
    r = subprocess.run(["auditctl", *line.split()], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0, f"auditctl accepted {line!r}: the test must use invalid lines"
    return [ln for ln in r.stderr.splitlines() if not ln.startswith("WARNING")][-1]


@pytest.mark.parametrize("line", INVALID)
def test_errors_read_like_auditctl(line, require_root):
    if shutil.which("auditctl") is None:
        pytest.skip("auditctl not installed")
    with pytest.raises(R.RuleError) as e:
        R.parse_args(line.split())
    assert e.value.message == auditctl_error(line)


def test_file_errors_name_the_line(tmp_path):
    f = tmp_path / "x.rules"
    f.write_text("-D\n# comment\n\n-b 8192\n-a always,exit -F arch=b64 -S kill -F nosuch=1\n")
    with pytest.raises(R.RuleError) as e:
        R.parse_file(f)
    assert e.value.line == 5
    assert str(e.value) == f"-F unknown field: nosuch (there was an error in line 5 of {f})"


def test_ignore_errors_from_its_line_on(tmp_path):
    """auditctl -i/-c: an error before the line stops the file, one after it is skipped
    with its line named, and the rules after it are marked so the kernel may refuse them."""
    f = tmp_path / "x.rules"
    f.write_text("-D\n-a always,exit -F arch=b64 -S kill -k before\n-i\n"
                 "-a always,exit -F nosuch=1\n-a always,exit -F arch=b64 -S bind -k after\n")
    cmds = R.parse_file(f)
    assert [c.op for c in cmds if isinstance(c, R.Control)] == [
        "delete_all", "ignore_errors", "skipped"]
    skipped = next(c for c in cmds if isinstance(c, R.Control) and c.op == "skipped")
    assert skipped.value == f"line 4 of {f}: -F unknown field: nosuch" and skipped.line == 4
    rules = [c for c in cmds if isinstance(c, R.RuleCommand)]
    assert [(c.rule.keys, c.tolerant, c.line, c.path) for c in rules] == [
        (("before",), False, 2, str(f)), (("after",), True, 5, str(f))]
    assert rules[1].where() == f"line 5 of {f}"
    f.write_text("-a always,exit -F nosuch=1\n-c\n")
    with pytest.raises(R.RuleError):
        R.parse_file(f)
    assert [c.op for c in R.parse_file(f, tolerant=True)] == ["skipped", "continue_errors"]


def test_ignore_errors_carries_into_later_files_and_from_the_command_line(tmp_path):
    from audtrace.tracer.subcommands import rules as cmd

    first, second = tmp_path / "10.rules", tmp_path / "20.rules"
    first.write_text("-D\n-i\n")
    second.write_text("-a always,exit -F nosuch=1\n-a always,exit -F arch=b64 -S bind\n")
    rules, commands = cmd.load([str(first), str(second)], [])
    assert len(rules) == 1 and any(getattr(c, "op", "") == "skipped" for c in commands)
    first.write_text("-D\n")
    with pytest.raises(R.RuleError):
        cmd.load([str(first), str(second)], [])
    rules, commands = cmd.load([str(first), str(second)], ["-c"])
    assert len(rules) == 1 and cmd.notices(commands) == [
        f"line 1 of {second}: -F unknown field: nosuch; left out (-c)"]


@x86_64_only
def test_values_convert_as_libaudit():
    r = R.parse_line(
        "-a exit,always -F arch=b64 -S open,openat -S 62 -F exit=-EACCES "
        "-F auid>=1000 -F auid!=unset -F uid=root -F a1&=0x10 -k k1 -F key=k2"
    )
    assert r.list == "exit" and r.action == "always"
    assert r.syscalls == (2, 62, 257)
    assert r.fields == (
        ("arch", "=", 0xC000003E),
        ("exit", "=", -13),
        ("auid", ">=", 1000),
        ("auid", "!=", 0xFFFFFFFF),
        ("uid", "=", 0),
        ("a1", "&=", 16),
        ("key", "=", "k1\x01k2"),
    )
    assert r.keys == ("k1", "k2")


def test_watch_and_compare(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    w = R.parse_line(f"-w {d}/ -p wa -k dirw")
    assert w.is_watch() and w.fields[0] == ("dir", "=", str(d))
    assert str(w) == f"-w {d} -p wa -k dirw"
    c = R.parse_line("-a always,exit -F arch=b64 -S execve -C uid!=euid -F euid=0")
    assert ("field_compare", "!=", 11) in c.fields
    assert "-C uid!=euid" in str(c)


def test_rule_set_follows_commands(tmp_path):
    text = (
        "-a always,exit -F arch=b64 -S kill -k a\n-D\n-a always,exit -F arch=b64 -S bind\n"
        "-A always,exit -F arch=b64 -S connect\n-e 2\n"
    )
    cmds = R.parse_text(text)
    rules = R.rule_set(cmds)
    assert [r.keys for r in rules] == [(), ()]
    assert str(rules[0]).endswith("-S connect") and str(rules[1]).endswith("-S bind")
    assert any(isinstance(c, R.Control) and c.op == "enabled" and c.value == 2 for c in cmds)


# ---- parse(str(rule)) == rule ---------------------------------------------------------
def _arches():
    b64, b32 = R.machine_arches()
    return st.sampled_from([b64, b32])


_text = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="\\"),
    min_size=1,
    max_size=30,
)
# a value that starts with "-" would list as an option: auditctl's own listing of such a
# path (`-w -D`) does not parse back either; nor one holding an operator's characters:
# libaudit looks for `!=`, `<=`, ... before `=` anywhere in the pair (`-F exe=0<=0` is the
# field `exe=0`), and audtrace parses as libaudit does
_value = _text.filter(lambda t: not t.startswith("-") and not set(t) & set("=!<>&"))
_key = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="\\"),
    min_size=1,
    max_size=20,
)
_ops = st.sampled_from(sorted(R.OPERATORS))
# value ranges that auditctl -l prints in a form auditctl parses back (%d for uid/pid...)
_numeric = st.one_of(
    st.tuples(st.sampled_from(["a0", "a1", "a2", "a3"]), _ops, st.integers(0, 0xFFFFFFFF)),
    st.tuples(
        st.sampled_from(["uid", "euid", "auid", "suid", "fsuid"]), _ops, st.integers(0, 0xFFFFFFFF)
    ),
    st.tuples(
        st.sampled_from(["pid", "ppid", "gid", "egid", "success", "devmajor"]),
        _ops,
        st.integers(0, 0x7FFFFFFF),
    ),
    st.tuples(st.just("exit"), _ops, st.integers(-4095, 0x7FFFFFFF)),
    st.tuples(st.just("perm"), st.just("="), st.integers(1, 15)),
    st.tuples(st.just("field_compare"), st.sampled_from(["=", "!="]), st.integers(1, 25)),
)
# the kernel takes path= and dir= only absolute and with = (audit_to_watch refuses the rest),
# and auditctl parses no relative watch back from its own listing
_string = st.one_of(
    st.tuples(st.sampled_from(["exe", "subj_type", "obj_user"]), st.sampled_from(["=", "!="]),
              _value),
    st.tuples(st.sampled_from(["path", "dir"]), st.just("="), _value.map(lambda v: "/" + v)),
)


@st.composite
def exit_rules(draw) -> R.Rule:
    fields = []
    if draw(st.booleans()):
        fields.append(("arch", draw(st.sampled_from(["=", "!="])), draw(_arches())))
    fields += draw(st.lists(st.one_of(_numeric, _string), max_size=8))
    # exe takes = and != only (already), keys last
    # one perm and one path or dir at most: a rule holds one watch (the kernel refuses more)
    seen: set[str] = set()
    clean = []
    for f in fields:
        kind = "watch" if f[0] in ("path", "dir") else f[0]
        if kind in ("perm", "watch"):
            if kind in seen:
                continue
            seen.add(kind)
        clean.append(f)
    # perm after the path, as `-w PATH -p PERM` makes it: auditctl lists a watch that way
    clean.sort(key=lambda f: f[0] == "perm")
    keys = draw(st.lists(_key, max_size=3))
    if keys:
        clean.append(("key", "=", R.KEY_SEP.join(keys)))
    host = tables.host_arch()
    known = sorted(nr for nr in range(0, 460) if tables.syscall_name(host, nr))
    syscalls = tuple(sorted(set(draw(st.lists(st.sampled_from(known), max_size=6)))))
    arch = next((v for n, o, v in clean if n == "arch"), None)
    if arch is not None and arch != host:  # names of the other table: keep numbers there
        syscalls = tuple(
            nr
            for nr in syscalls
            if tables.syscall_name(arch, nr) and not tables.syscall_name(arch, nr).isdigit()
        )
    action = draw(st.sampled_from(["always", "never"]))
    rule = R.Rule("exit", action, syscalls, tuple(clean))
    if rule.is_watch():
        # `-w PATH` reads back as path= or dir= by what PATH is on this machine (auditctl
        # stats it): a listed dir watch of a path that is no directory comes back as path=
        rule = R.Rule("exit", action, syscalls,
                      tuple(("path", o, v) if n == "dir" else (n, o, v) for n, o, v in clean))
    return rule


@given(exit_rules())
def test_parse_of_listing_is_identity(rule: R.Rule):
    text = str(rule)
    back = R.parse_line(text) if not rule.is_watch() else R.parse_line(text)
    assert back == rule, text
    # and the kernel form lists the same way
    msg = rule_data(rule)
    msg.encode()
    sent = audit_rule_msg(bytes(msg.data))
    sent.decode()
    assert str(rule_of(sent)) == text


# ---- placement -------------------------------------------------------------------------
@x86_64_only
def test_placement_and_first_match(tmp_path):
    exe = tmp_path / "prog"
    exe.write_text("")
    rules = [
        R.parse_line(t)
        for t in (
            "-a always,exit -F arch=b64 -S kill -F a1=15 -k k",  # ebpf
            f"-w {tmp_path}/f -p wa -k w",  # audit (watch)
            "-a always,exit -F arch=b64 -S unlink -k u",  # after the watch
            "-a always,exit -F arch=b64 -S execve -C uid!=euid -F euid=0",  # x: not in wa
            "-a always,exit -S connect",  # split
            f"-a never,exit -F arch=b64 -S exit_group -F exe={exe}",  # ebpf never
            "-a always,exit -F arch=b64 -S exit_group -F pers=8",  # audit: pers
        )
    ]
    p = F.plan(rules)
    where = [pl.where for pl in p.placed]
    assert where == ["ebpf", "audit", "audit", "ebpf", "ebpf+audit", "ebpf", "audit"]
    assert "first matching rule" in p.placed[2].why
    # the never rule is copied into the kernel before the gid rule it overlaps
    texts = [str(r) for r in p.audit]
    gid_at = texts.index("-a always,exit -F arch=b64 -S exit_group -F pers=8")
    assert f"-a never,exit -F arch=b64 -S exit_group -F exe={exe}" in texts[:gid_at]
    assert "-a always,exit -F arch=b32 -S connect" not in texts  # b32 part keeps b64 numbers
    assert any(t.startswith("-a always,exit -F arch=b32 -S ") for t in texts)
    assert p.exe_ids[str(exe)] == (os.stat(exe).st_ino, kernel_dev(os.stat(exe).st_dev))
    src = F.c_source(p)
    assert "rule_1" in src and "((u32)a[1]) == 15U" in src and "exe->ino ==" in src
    g = F.c_source(F.plan([R.parse_line("-a always,exit -F arch=b64 -S kill -F egid!=4")]))
    assert "(id->egid != 4U && !in_groups(4U))" in g


@x86_64_only
def test_32_bit_rules_placed_in_ebpf_when_it_sees_32_bit_calls():
    rules = [R.parse_line(t) for t in (
        "-a always,exit -F arch=b32 -S kill -F a1=15 -k k32",
        "-a always,exit -S connect -k any",
        "-a always,exit -F arch=b64 -S kill -F a1=15 -k k64",
    )]
    b64, b32 = R.machine_arches()
    off = F.plan(rules)
    assert [pl.where for pl in off.placed] == ["audit", "ebpf+audit", "ebpf"]
    assert not off.compat
    on = F.plan(rules, compat=True)
    assert [pl.where for pl in on.placed] == ["ebpf", "ebpf", "ebpf"]
    assert on.audit == [] and on.compat and on.arches == (b64, b32)
    native, compat = F.traced_numbers(on)
    kill32, kill64 = tables.syscall_number(b32, "kill"), tables.syscall_number(b64, "kill")
    connect = tables.syscall_number(b64, "connect")
    assert native == {kill64, connect} and compat == {kill32, connect}
    src = F.c_source(on)
    # each rule tests the ABI; an argument is read after it, from that ABI's registers
    assert (f"case {kill32}: _in = 1; }} _in; }}) && compat && "
            "((u32)rule_arg(c, compat, 1)) == 15U") in src
    assert (f"case {kill64}: _in = 1; }} _in; }}) && !compat && "
            "((u32)rule_arg(c, compat, 1)) == 15U") in src
    assert "rule_2(s32 nr, u32 compat, const u64 *a" in src


def test_command_line_words_split_into_commands():
    from audtrace.tracer.subcommands.rules import command_line_commands

    cmds = command_line_commands(
        [
            "-a",
            "always,exit",
            "-F",
            "arch=b64",
            "-S",
            "kill",
            "-k",
            "k1",
            "-w",
            "/tmp",
            "-p",
            "wa",
            "-k",
            "k2",
            "-D",
            "-a",
            "never,exit",
            "-Farch=b64",
            "-S",
            "bind",
        ]
    )
    assert [type(c).__name__ for c in cmds] == [
        "RuleCommand",
        "RuleCommand",
        "Control",
        "RuleCommand",
    ]
    assert cmds[0].rule.keys == ("k1",) and cmds[1].rule.keys == ("k2",)
    assert [str(r) for r in R.rule_set(cmds)] == ["-a never,exit -F arch=b64 -S bind"]


@x86_64_only
def test_stig_style_file_placement():
    from pathlib import Path

    stig = Path(__file__).resolve().parents[1] / "data/stig-style.rules"
    cmds = R.parse_file(stig)
    p = F.plan(R.rule_set(cmds))
    by_key: dict[str, set[str]] = {}
    for pl in p.placed:
        for k in pl.rule.keys:
            by_key.setdefault(k, set()).add(pl.where)
    assert by_key["time-change"] == {"ebpf", "audit"}  # b64 rules / b32 rule, watch
    assert by_key["setuid"] == {"ebpf"}
    assert by_key["setgid"] == {"ebpf"}  # egid= with supplementary groups, in eBPF
    assert by_key["modules"] == by_key["export"] == {"ebpf"}
    assert by_key["identity"] == {"audit"}  # watches
    # after `-w ... -p wa`, chmod/open/unlink rules can match the same calls: kernel audit
    assert by_key["perm_mod"] == by_key["access"] == by_key["delete"] == {"audit"}
    settings = {c.op: c.value for c in cmds if isinstance(c, R.Control)}
    assert settings == {
        "delete_all": None,
        "backlog_limit": 8192,
        "failure": 1,
        "backlog_wait_time": 60000,
        "enabled": 2,
    }


def test_ebpf_budget_sends_the_rest_to_kernel_audit():
    rules = [R.parse_line(f"-a always,exit -F arch=b64 -S kill,tgkill -F a1={i} -k k{i}")
             for i in range(1, 400)]
    p = F.plan(rules)
    cost = sum(F._cost(r) for r in p.ebpf)
    assert 0 < cost <= F.MAX_EBPF_COST < cost + F._cost(rules[len(p.ebpf)])
    over = p.placed[len(p.ebpf)]
    assert over.where == "audit" and "eBPF filters are full" in over.why
    # first match still holds: every kernel rule after them is preceded by their never copies
    assert str(p.audit[0]).startswith("-a never,exit")


def test_refused_rules_are_reported_by_line_or_stop(tmp_path, capsys):
    import errno

    from audtrace.tracer.audit.netlink import AuditError
    from audtrace.tracer.subcommands import rules as cmd

    f = tmp_path / "r.rules"
    f.write_text("-a always,exit -F dir=/a/ -F perm=wa -k a\n-i\n"
                 "-a always,exit -F dir=/b/ -F perm=wa -k b\n")
    rules, commands = cmd.load([str(f)], [])
    refusals = cmd.Refusals(commands, F.plan(rules))
    gone = OSError(errno.ENOENT, "")
    with pytest.raises(AuditError, match=f"^line 1 of {f}: the kernel refused -w /a/ "):
        refusals(rules[0], gone)
    assert refusals(rules[1], gone) is True
    assert capsys.readouterr().err == (
        f"audtrace: line 3 of {f}: the kernel refused -w /b/ -p wa -k b: No such file or "
        "directory (ENOENT); left out (-i)\n")
    never = R.Rule(syscalls=[62], fields=[("arch", "=", "b64")], action="never")
    assert refusals(never, gone) is False       # not from the file: the error stands
    assert refusals.status(0) == 0
