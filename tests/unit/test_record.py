from __future__ import annotations

import pytest
from audtrace.compat import record, tables
from audtrace.compat.record import (
    Event,
    Record,
    enc_hex,
    enc_int,
    enc_str,
    format_raw,
    parse_line,
    parse_log,
    parse_netlink,
    split_fields,
)
from audtrace.compat.tables import AUDIT_ARCH_X86_64
from hypothesis import given
from hypothesis import strategies as st

# ------------------------------------------------------------------ encodings


def test_enc_str_rules():
    assert enc_str("kill") == '"kill"'
    assert enc_str(b"/usr/bin/kill") == '"/usr/bin/kill"'
    assert enc_str("") == '""'
    assert enc_str("a b") == "612062"  # space
    assert enc_str('say"hi') == "736179226869"  # double quote
    assert enc_str(b"\x7f") == "7F" and enc_str(b"~") == '"~"'
    assert enc_str("é") == "C3A9"  # non-ASCII: hex of the UTF-8 bytes


@given(st.binary())
def test_enc_str_is_quoted_or_hex_and_reversible(raw):
    text = enc_str(raw)
    if text.startswith('"'):
        inner = text[1:-1].encode()
        assert text.endswith('"') and inner == raw
        assert all(0x21 <= b <= 0x7E and b != 0x22 for b in inner)
    else:
        assert len(text) % 2 == 0 and text == text.upper()
        assert bytes.fromhex(text) == raw
        assert any(b < 0x21 or b > 0x7E or b == 0x22 for b in raw)


def test_enc_hex_and_int():
    assert enc_hex(AUDIT_ARCH_X86_64) == "c000003e"
    assert enc_hex(-100) == "ffffffffffffff9c"  # AT_FDCWD as a 64-bit register
    assert enc_hex(0) == "0"
    assert enc_int(-1) == "-1" and enc_int(4294967295) == "4294967295"


# --------------------------------------------------------------- splitting


def test_split_fields_forms():
    assert split_fields('a=1 comm="x y" b=2') == [("a", "1"), ("comm", '"x y"'), ("b", "2")]
    body = "pid=12 uid=0 msg='op=login acct=\"root\" res=success'"
    assert split_fields(body) == [
        ("pid", "12"),
        ("uid", "0"),
        ("msg", "'op=login acct=\"root\" res=success'"),
    ]
    assert split_fields("saddr=0200 SADDR={ saddr_fam=inet lport=1 } x=1") == [
        ("saddr", "0200"),
        ("SADDR", "{ saddr_fam=inet lport=1 }"),
        ("x", "1"),
    ]
    assert split_fields("avc:  denied  { read } for pid=1") == [("pid", "1")]
    assert split_fields("") == [] and split_fields("key=") == [("key", "")]


_NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_VALUES = st.one_of(
    st.binary(max_size=12).map(enc_str),
    st.integers(-(2**63), 2**64).map(str),
    st.from_regex(r"'[a-z= ]{0,10}'", fullmatch=True),
)


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8))
def test_split_fields_reverses_joining(fields):
    assert split_fields(" ".join(f"{k}={v}" for k, v in fields)) == fields


def test_record_get_parses_body_lazily():
    rec = Record("SYSCALL", body='arch=c000003e syscall=62 comm="kill"')
    assert rec.get("syscall") == "62" and rec.get("comm") == '"kill"' and rec.get("x") is None
    assert rec.text() == 'arch=c000003e syscall=62 comm="kill"'


# ----------------------------------------------------------------- types


def test_record_type_names():
    assert record.record_type_name(1300) == "SYSCALL"
    assert record.record_type_name(1318) == "OBJ_PID"
    assert record.record_type_name(1327) == "PROCTITLE"
    assert record.record_type_name(1306) == "SOCKADDR"
    assert record.record_type_name(1399) == "UNKNOWN[1399]"
    assert record.record_type_number("UNKNOWN[1399]") == 1399
    assert record.record_type_number("1305") == 1305
    with pytest.raises(ValueError):
        record.record_type_number("NOT_A_TYPE")


def test_record_type_names_round_trip():
    types = tables.msg_types()
    assert len(types) > 150
    for num, name in types.items():
        assert record.record_type_name(num) == name
        assert record.record_type_number(name) == num


# --------------------------------------------------------------- raw format


def _event(source="ebpf", node=None):
    recs = [
        Record("SYSCALL", [("arch", "c000003e"), ("syscall", "62"), ("key", '"k"')]),
        Record("OBJ_PID", [("opid", "3425"), ("ocomm", '"sleep"')]),
    ]
    return Event(1795314885, 7, (1 << 31) | (3 << 25) | 1, recs, source, node)


def test_format_raw_lines():
    ev = _event()
    assert format_raw(ev) == (
        "type=SYSCALL msg=audit(1795314885.007:2248146945): arch=c000003e syscall=62 "
        'key="k" src=ebpf\n'
        'type=OBJ_PID msg=audit(1795314885.007:2248146945): opid=3425 ocomm="sleep" '
        "src=ebpf"
    )
    ev.source = "audit"
    ev.node = "web01"
    assert format_raw(ev).split("\n")[1] == (
        "node=web01 type=OBJ_PID msg=audit(1795314885.007:2248146945): "
        'opid=3425 ocomm="sleep"'
    )


def test_src_not_doubled_and_empty_body():
    ev = Event(1, 0, 5, [Record("EOE"), Record("X", [("a", "1"), ("src", "ebpf")])], "ebpf")
    assert (
        format_raw(ev)
        == "type=EOE msg=audit(1.000:5): src=ebpf\ntype=X msg=audit(1.000:5): a=1 src=ebpf"
    )
    ev.source = "audit"
    assert format_raw(ev).split("\n")[0] == "type=EOE msg=audit(1.000:5):"


def test_parse_line():
    line = 'node=h1 type=SYSCALL msg=audit(1795314885.413:13): arch=c000003e comm="kill"'
    assert parse_line(line + "\n") == (
        "h1", "SYSCALL", 1795314885, 413, 13, 'arch=c000003e comm="kill"',
    )  # fmt: skip
    assert parse_line("type=EOE msg=audit(1.000:2):") == (None, "EOE", 1, 0, 2, "")
    enriched = 'type=CWD msg=audit(1.000:2): uid=0\x1dUID="root"'
    assert parse_line(enriched)[5] == "uid=0"


@pytest.mark.parametrize(
    "line",
    [
        "type=SYSCALL msg=audit(1795314885.413123:13): a=1",  # 6 fraction digits
        "type=SYSCALL msg=audit(1795314885.41:13): a=1",
        "type=SYSCALL src=ebpf msg=audit(1795314885.413:13): a=1",  # field before msg=
        "host=x type=SYSCALL msg=audit(1795314885.413:13): a=1",  # prefix other than node=
        "type=SYSCALL msg=audit(1795314885.413): a=1",
        "garbage",
    ],
)
def test_parse_line_rejects_what_ausearch_drops(line):
    with pytest.raises(ValueError):
        parse_line(line)


@given(
    st.integers(0, 2**40), st.integers(0, 999), st.integers(0, 2**64 - 1),
    st.sampled_from(["ebpf", "audit"]), st.one_of(st.none(), st.just("n1")),
    st.lists(st.lists(st.tuples(_NAMES, _VALUES), min_size=1, max_size=5), min_size=1, max_size=4),
)  # fmt: skip
def test_format_raw_parse_log_round_trip(sec, msec, serial, source, node, recs):
    recs = [[(k, v) for k, v in fields if k != "src"] or [("a", "1")] for fields in recs]
    ev = Event(sec, msec, serial, [Record("SYSCALL", f) for f in recs], source, node)
    (back,) = parse_log(format_raw(ev).split("\n"))
    assert back.ident() == ev.ident() and back.source == source
    assert [r.field_items() for r in back.records] == recs
    assert format_raw(back) == format_raw(ev)


def test_parse_log_groups_by_identity():
    lines = format_raw(_event()).split("\n")
    other = format_raw(Event(1795314885, 7, 13, [Record("CWD", [("cwd", '"/"')])], "audit"))
    events = parse_log([lines[0], other, lines[1]])
    assert [(e.serial, e.source, len(e.records)) for e in events] == [
        ((1 << 31) | (3 << 25) | 1, "ebpf", 2),
        (13, "audit", 1),
    ]


# ------------------------------------------------------------------ netlink


def test_parse_netlink():
    text = 'audit(1795314885.413:13): opid=3425 oauid=-1 ocomm="sleep"\x00'
    assert parse_netlink(1318, text) == (1795314885, 413, 13, 'opid=3425 oauid=-1 ocomm="sleep"')
    assert parse_netlink(1320, "audit(1795314885.413:13): ") == (1795314885, 413, 13, "")
    assert parse_netlink(1300, "audit(1.002:3): a=1\nb=2\n") == (1, 2, 3, "a=1 b=2")
    with pytest.raises(ValueError, match="1300"):
        parse_netlink(1300, "audit(1.2:3): a=1")
