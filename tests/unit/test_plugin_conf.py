"""Plugin files read as auditd reads them (tracer/plugins.py), and the events plugins get.

The files are auditd-plugins(5)'s format; the shipped ones are Debian's own, read from
/etc/audit/plugins.d where the system has them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from audtrace.compat.record import parse_log
from audtrace.tracer.plugins import PluginConf, PluginError, read_conf, read_dir, split_events

SYSTEM_DIR = Path("/etc/audit/plugins.d")
GOLDEN_RAW = Path(__file__).parents[1] / "data/golden/raw.out"


@pytest.fixture
def program(tmp_path: Path) -> Path:
    """An executable a plugin file may name: regular, 0755, ours."""
    p = tmp_path / "bin" / "plugin"
    p.parent.mkdir()
    p.write_text("#!/bin/sh\nexec /bin/cat >/dev/null\n")
    p.chmod(0o755)
    return p


def conf(tmp_path: Path, text: str, name: str = "p.conf") -> Path:
    f = tmp_path / name
    f.write_text(text)
    f.chmod(0o640)
    return f


def error_of(path: Path) -> str:
    with pytest.raises(PluginError) as e:
        read_conf(str(path))
    msg = str(e.value)
    assert "\n" not in msg, "one line"
    return msg


def test_an_active_plugin(tmp_path, program):
    f = conf(tmp_path, f"# comment\n\n  active = yes\ndirection = out\npath = {program}\n"
                       "type = always \nargs = --config /etc/x.toml\nformat = string\n")
    assert read_conf(str(f)) == PluginConf(str(f), True, str(program),
                                           ("--config", "/etc/x.toml"))


def test_keywords_and_values_in_any_case_later_lines_win(tmp_path, program):
    f = conf(tmp_path, f"Active = NO\nPATH = {program}\nactive = Yes\nFormat = STRING\n"
                       "args = a b c d\n")
    c = read_conf(str(f))
    assert c.active and c.path == str(program)
    assert c.args == ("a", "b", "c", "d")     # as auditd 4 (auditd 3.0 kept two)


def test_defaults_inactive(tmp_path):
    assert read_conf(str(conf(tmp_path, "# nothing\n"))) == PluginConf(
        str(tmp_path / "p.conf"), False, "", ())


def test_inactive_plugins_are_not_checked_beyond_syntax(tmp_path):
    f = conf(tmp_path, "active = no\npath = /nonexistent/x\nformat = binary\ntype = builtin\n")
    assert not read_conf(str(f)).active


@pytest.mark.parametrize("text, line, key, says", [
    ("active=yes\n", 1, "active", "expected `active = value`"),
    ("active yes\n", 1, "active", "expected"),
    ("active =\n", 1, "active", "expected"),
    ("\n# x\nfoo = bar\n", 3, "foo", "unknown keyword"),
    ("active = maybe\n", 1, "active", "'maybe' is not one of yes, no"),
    ("active = yes\ntype = always now\n", 2, "type", "one value only"),
    ("active = yes\ndirection = in\n", 2, "direction", "inbound plugins are not supported"),
    ("active = yes\ndirection = sideways\n", 2, "direction", "is not one of"),
    ("active = yes\nformat = binary\npath = PROGRAM\n", 2, "format", "format = string"),
    ("active = yes\npath = builtin_af_unix\n", 2, "path", "built-in plugins (builtin_af_unix)"),
    ("active = yes\ntype = builtin\npath = PROGRAM\n", 2, "type", "built-in plugins"),
    ("active = yes\npath = bin/plugin\n", 2, "path", "not an absolute path"),
    ("active = yes\npath = /nonexistent/plugin\n", 2, "path", "No such file or directory"),
])
def test_errors_name_file_line_and_key(tmp_path, program, text, line, key, says):
    f = conf(tmp_path, text.replace("PROGRAM", str(program)))
    msg = error_of(f)
    assert msg.startswith(f"{f}:{line}: {key}: "), msg
    assert says in msg, msg


def test_an_active_plugin_needs_a_path(tmp_path):
    f = conf(tmp_path, "active = yes\n")
    assert error_of(f) == f"{f}: path: an active plugin needs `path = /its/program`"


@pytest.mark.parametrize("mode, says", [(0o644, "at least 0550"), (0o775, "writable by group"),
                                        (0o757, "writable by group or others")])
def test_program_permissions_as_auditd(tmp_path, program, mode, says):
    program.chmod(mode)
    f = conf(tmp_path, f"active = yes\npath = {program}\n")
    msg = error_of(f)
    assert msg.startswith(f"{f}:2: path: {program}: ") and says in msg, msg


def test_program_must_be_a_regular_file(tmp_path):
    f = conf(tmp_path, f"active = yes\npath = {tmp_path}\n")
    assert "not a regular file" in error_of(f)


def test_world_writable_plugin_file_refused(tmp_path, program):
    f = conf(tmp_path, f"active = yes\npath = {program}\n")
    f.chmod(0o646)
    assert error_of(f) == f"{f}: writable by group or others"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
def test_plugin_file_of_another_user_refused(tmp_path, program):
    f = conf(tmp_path, f"active = yes\npath = {program}\n")
    os.chown(f, 65534, 65534)
    assert error_of(f) == f"{f}: not owned by root"


def test_directory_reads_conf_files_only(tmp_path, program):
    text = f"active = yes\npath = {program}\n"
    for name in ("b.conf", "a.conf", ".hidden.conf", "b.conf.dpkg-old", "c.dpkg-old.conf",
                 "README", "d.conf~"):
        conf(tmp_path, text, name)
    got = read_dir(str(tmp_path))
    assert [c.name for c in got] == ["a.conf", "b.conf"]


def test_missing_directory(tmp_path):
    with pytest.raises(PluginError, match=r"/nope: plugin directory: No such file"):
        read_dir(str(tmp_path / "nope"))


@pytest.mark.skipif(not SYSTEM_DIR.is_dir(), reason="no /etc/audit/plugins.d (auditd)")
def test_debians_shipped_files(tmp_path):
    """Debian's files, as shipped (inactive), read without error; each made active is
    taken (its program is there) or refused in one line (the built-in af_unix)."""
    confs = read_dir(str(SYSTEM_DIR))
    assert confs, "auditd ships af_unix.conf and syslog.conf"
    for c in confs:
        src = Path(c.file)
        copy = tmp_path / src.name
        text = re.sub(r"(?m)^active\s*=\s*\w+", "active = yes", src.read_text())
        copy.write_text(text)
        copy.chmod(0o640)
        path = next(ln.split()[2] for ln in text.splitlines() if ln.startswith("path "))
        if path.startswith("builtin_"):
            assert "built-in plugins (builtin_af_unix) are not supported" in error_of(copy)
        elif shutil.which(path) or Path(path).exists():
            got = read_conf(str(copy))
            assert got.active and got.path == path
    syslog = SYSTEM_DIR / "syslog.conf"
    if syslog.exists():
        assert read_conf(str(syslog)).args == ("LOG_INFO",)


# ---- the events plugins get -----------------------------------------------------------------

def test_events_split_by_stamp_with_eoe_as_the_kernel_ends_them():
    raw = (b"type=SYSCALL msg=audit(1.001:7): a=1\n"
           b"type=PROCTITLE msg=audit(1.001:7): p=2\n"
           b"type=USER msg=audit(1.002:8): pid=1 msg='x'\n"
           b"type=SYSCALL msg=audit(1.003:9): b=1\n"
           b"node=web-01 type=PATH msg=audit(1.004:9): item=0\n"
           b"node=web-01 type=CWD msg=audit(1.004:9): cwd=\"/\"")       # no final newline
    assert split_events(raw) == [
        b"type=SYSCALL msg=audit(1.001:7): a=1\ntype=PROCTITLE msg=audit(1.001:7): p=2\n"
        b"type=EOE msg=audit(1.001:7): \n",
        b"type=USER msg=audit(1.002:8): pid=1 msg='x'\n",                 # a lone user record
        b"type=SYSCALL msg=audit(1.003:9): b=1\ntype=EOE msg=audit(1.003:9): \n",
        b"node=web-01 type=PATH msg=audit(1.004:9): item=0\n"
        b"node=web-01 type=CWD msg=audit(1.004:9): cwd=\"/\"\n"
        b"node=web-01 type=EOE msg=audit(1.004:9): \n",
    ]


def test_the_corpus_splits_into_its_events():
    """The project's own events (the golden RAW corpus): one piece per event, its lines
    the event's own in order, EOE after every multi-record or syscall event only."""
    text = GOLDEN_RAW.read_bytes()
    want = parse_log(text.decode().splitlines())
    got = split_events(text)
    assert len(got) == len(want)
    for piece, ev in zip(got, want, strict=True):
        lines = piece.decode().splitlines()
        if len(ev.records) > 1 or ev.records[0].type == "SYSCALL":
            node = f"node={ev.node} " if ev.node else ""
            assert lines.pop() == f"{node}type=EOE msg=audit({ev.sec}.{ev.msec:03d}:{ev.serial}): "
        assert [ln.split(" msg=")[0].split("type=")[1] for ln in lines] == [
            r.type for r in ev.records]
    without_eoe = b"".join(ln for piece in got for ln in piece.splitlines(keepends=True)
                           if b"type=EOE " not in ln)
    assert without_eoe == text
