"""Audit rule encoding (struct audit_rule_data), auditctl -l wording, record grouping."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from audtrace.compat import tables
from audtrace.compat.rules import OPERATORS, Rule
from audtrace.compat.tables import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64
from audtrace.tracer.audit.netlink import audit_rule_msg, audit_status_msg, rule_data, rule_of
from audtrace.tracer.audit.source import AuditSource
from audtrace.tracer.subcommands import kill
from hypothesis import given
from hypothesis import strategies as st

UAPI = Path("/usr/include/linux/audit.h")
X86_64 = tables.host_arch() == AUDIT_ARCH_X86_64
x86_64_only = pytest.mark.skipif(not X86_64, reason="b64/b32 and syscall numbers of x86_64")


def encode(rule: Rule) -> bytes:
    msg = rule_data(rule)
    msg["header"]["type"] = 1011
    msg.encode()
    return bytes(msg.data)


def decode(data: bytes) -> Rule:
    msg = audit_rule_msg(data)
    msg.decode()
    return rule_of(msg)


# ---- the layout, against the C compiler's view of the uapi header ---------------------------

C_LAYOUT = r"""
#include <stddef.h>
#include <stdio.h>
#include <linux/audit.h>
#define OFF(s, m) printf("%s %zu\n", #m, offsetof(struct s, m))
int main(void) {
    printf("rule_size %zu\n", sizeof(struct audit_rule_data));
    OFF(audit_rule_data, flags); OFF(audit_rule_data, action);
    OFF(audit_rule_data, field_count); OFF(audit_rule_data, mask);
    OFF(audit_rule_data, fields); OFF(audit_rule_data, values);
    OFF(audit_rule_data, fieldflags); OFF(audit_rule_data, buflen);
    OFF(audit_rule_data, buf);
    printf("status_size %zu\n", sizeof(struct audit_status));
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not UAPI.exists():
        pytest.skip("needs a C compiler and the linux/audit.h uapi header")
    d = tmp_path_factory.mktemp("layout")
    (d / "l.c").write_text(C_LAYOUT)
    subprocess.run([cc, "-o", str(d / "l"), str(d / "l.c")], check=True)
    out = subprocess.run([str(d / "l")], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_rule_struct_matches_uapi(c_layout):
    assert audit_rule_msg.FIXED_SIZE == c_layout["rule_size"] == c_layout["buf"]
    rule = Rule(syscalls=[62, 200], fields=[("a1", "=", 15), ("key", "=", "abc")])
    data = encode(rule)
    body = 16  # struct nlmsghdr
    assert len(data) == body + c_layout["rule_size"] + 4  # "abc" padded to 4
    assert struct.unpack_from("I", data, 0)[0] == body + c_layout["rule_size"] + 3
    u32 = lambda name, i=0: struct.unpack_from("I", data, body + c_layout[name] + 4 * i)[0]  # noqa: E731
    assert (u32("flags"), u32("action"), u32("field_count")) == (4, 2, 2)  # exit, always
    assert u32("mask", 1) == 1 << (62 - 32) and u32("mask", 6) == 1 << (200 - 192)
    assert (u32("fields"), u32("fields", 1)) == (201, 210)  # AUDIT_ARG1, AUDIT_FILTERKEY
    assert (u32("values"), u32("values", 1)) == (15, 3)  # a string's value is its length
    assert u32("fieldflags") == 0x40000000  # AUDIT_EQUAL
    assert u32("buflen") == 3
    assert data[body + c_layout["buf"]:][:3] == b"abc"


def test_status_struct_matches_uapi(c_layout):
    msg = audit_status_msg()
    msg.encode()
    assert len(msg.data) == 16 + c_layout["status_size"]


# ---- round trip -----------------------------------------------------------------------------

NUMERIC = ["pid", "uid", "euid", "auid", "gid", "ppid", "sessionid", "exit", "success",
           "a0", "a1", "a2", "a3", "inode", "devmajor", "msgtype", "perm", "saddr_fam"]
STRINGS = ["key", "exe", "path", "dir", "subj_type", "obj_user"]
text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
numeric_field = st.tuples(st.sampled_from(NUMERIC), st.sampled_from(sorted(OPERATORS)),
                          st.integers(0, 0xFFFFFFFF))
string_field = st.tuples(st.sampled_from(STRINGS), st.sampled_from(["=", "!="]), text)
rules = st.builds(
    Rule,
    list=st.sampled_from(["exit", "user", "task", "exclude", "filesystem"]),
    action=st.sampled_from(["always", "never"]),
    syscalls=st.lists(st.integers(0, 2047), max_size=20),
    fields=st.lists(st.one_of(numeric_field, string_field), max_size=20),
)


@given(rules)
def test_rule_data_round_trip(rule: Rule):
    data = encode(rule)
    back = decode(data)
    assert back == rule
    assert encode(back) == data


def test_normalized_values():
    rule = Rule(fields=[("auid", "!=", "unset"), ("loginuid", "=", -1),
                             ("exit", "=", 0xFFFFFFFF), ("perm", "=", "wa"), ("uid", "=", "0x10")])
    assert rule.fields == (("auid", "!=", 0xFFFFFFFF), ("auid", "=", 0xFFFFFFFF),
                           ("exit", "=", -1), ("perm", "=", 2 | 8), ("uid", "=", 16))


def test_keys_share_one_field():
    # the kernel accepts one key field per rule (a second is EINVAL); auditctl joins with \x01
    rule = Rule(fields=[("key", "=", "a"), ("pid", "=", 1), ("key", "=", "b")])
    assert rule.fields == (("key", "=", "a\x01b"), ("pid", "=", 1))
    assert rule.keys == ("a", "b")


@pytest.mark.parametrize("fields", [
    [("nosuchfield", "=", 1)], [("pid", "~", 1)], [("key", "=", 5)], [("key", "=", "k" * 257)],
])
def test_invalid_fields_raise(fields):
    with pytest.raises(ValueError):
        Rule(fields=fields)


@x86_64_only
def test_arch_names():
    assert Rule(fields=[("arch", "=", "b64")]).arch == AUDIT_ARCH_X86_64
    assert Rule(fields=[("arch", "=", "b32")]).arch == AUDIT_ARCH_I386


# ---- auditctl -l wording ----------------------------------------------------------------------

# each line as auditctl 3.0.9 `-l` printed it for the rule on its left, added to the running
# kernel (the kernel tests compare live against the installed auditctl)
AUDITCTL_LINES = [
    (Rule(syscalls=[62, 200], fields=[("arch", "=", "b64"), ("a1", "=", 15),
                                           ("key", "=", "audtrace")]),
     "-a always,exit -F arch=b64 -S kill,tkill -F a1=0xF -F key=audtrace"),
    (Rule(syscalls=[234], fields=[("arch", "=", "b64"), ("a2", "!=", 9),
                                       ("auid", "!=", "unset"), ("success", "=", 1),
                                       ("key", "=", "k1"), ("key", "=", "k2")]),
     "-a always,exit -F arch=b64 -S tgkill -F a2!=0x9 -F auid!=-1 -F success=1 -F key=k1 "
     "-F key=k2"),
    (Rule(fields=[("arch", "=", "b32"), ("exit", "=", -1), ("exe", "=", "/usr/bin/sleep"),
                       ("uid", ">=", 1000), ("perm", "=", "wa")]),
     "-a always,exit -F arch=b32 -S all -F exit=-EPERM -F exe=/usr/bin/sleep -F uid>=1000 "
     "-F perm=wa"),
    (Rule(syscalls=[2], fields=[("path", "=", "/etc/passwd"), ("pid", "=", 1234)]),
     "-a always,exit -S open -F path=/etc/passwd -F pid=1234"),
]


@x86_64_only
@pytest.mark.parametrize("rule, line", AUDITCTL_LINES)
def test_auditctl_wording(rule: Rule, line: str):
    assert str(rule) == line
    assert str(decode(encode(rule))) == line


# ---- rules for a signal request -----------------------------------------------------------------

@x86_64_only
def test_signal_rules_one_per_argument_and_signal():
    rules = kill.audit_rules([15, 9], ["k"])
    by_arg = {}
    for rule in rules:
        arg = next(f for f in rule.fields if f[0] in ("a1", "a2"))
        by_arg.setdefault(arg[0], []).append(arg[2])
        names = {tables.syscall_name(AUDIT_ARCH_X86_64, nr) for nr in rule.syscalls}
        expected = {n for n, a in kill.SIGNAL_ARG.items() if f"a{a}" == arg[0]}
        assert names == expected
        assert rule.fields[0] == ("arch", "=", AUDIT_ARCH_X86_64)
        assert rule.keys == ("k",)
    assert by_arg == {"a1": [15, 9], "a2": [15, 9]}
    every, = kill.audit_rules([], [])
    assert len(every.syscalls) == 6 and all(f[0] == "arch" for f in every.fields)


# ---- grouping of multicast records into events ----------------------------------------------

class FakeReader:
    def __init__(self) -> None:
        self.queued: list[tuple[int, str]] = []
        self.overruns = 0

    def recv_records(self):
        while self.queued:
            yield self.queued.pop(0)


def source_with(records: list[tuple[int, str]]) -> AuditSource:
    src = AuditSource([], lambda _m: None)
    src._reader = FakeReader()  # type: ignore[assignment]
    src._reader.queued = list(records)
    src._open = True
    return src


SYSCALL = (1300, "audit(1700000000.123:42): arch=c000003e syscall=62 success=yes exit=0")
OBJ_PID = (1318, 'audit(1700000000.123:42): opid=7 oauid=-1 ouid=0 oses=-1 ocomm="sleep"')
TITLE = (1327, "audit(1700000000.123:42): proctitle=6B696C6C")
EOE = (1320, "audit(1700000000.123:42): ")


def test_event_ends_at_eoe_which_is_not_relayed():
    src = source_with([SYSCALL, OBJ_PID, TITLE])
    assert src.read_events() == []
    src._reader.queued = [EOE]
    ev, = src.read_events()
    assert (ev.sec, ev.msec, ev.serial, ev.source) == (1700000000, 123, 42, "audit")
    assert [r.type for r in ev.records] == ["SYSCALL", "OBJ_PID", "PROCTITLE"]
    assert ev.records[1].body == OBJ_PID[1].split("): ", 1)[1]


def test_interleaved_events_and_single_record_types():
    other = (1300, "audit(1700000000.124:43): arch=c000003e syscall=200")
    user = (1100, "audit(1700000000.125:44): pid=1 msg='op=PAM:authentication res=success'")
    src = source_with([SYSCALL, other, user, OBJ_PID, (1320, "audit(1700000000.124:43): "),
                       TITLE, EOE])
    events = src.read_events()
    assert [(e.serial, [r.type for r in e.records]) for e in events] == [
        (44, ["USER_AUTH"]), (43, ["SYSCALL"]), (42, ["SYSCALL", "OBJ_PID", "PROCTITLE"])]


def test_flush_emits_events_without_eoe():
    change = (1305, "audit(1700000000.200:50): op=remove_rule key=\"k\" list=4 res=1")
    src = source_with([change])
    assert src.read_events() == []  # CONFIG_CHANGE may be followed by SYSCALL ... EOE
    ev, = src.flush()
    assert [r.type for r in ev.records] == ["CONFIG_CHANGE"]
    assert src.flush() == []


def test_malformed_records_are_counted():
    src = source_with([(1300, "no stamp here")])
    assert src.read_events() == [] and src.malformed == 1
