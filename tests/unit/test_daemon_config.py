"""The daemon's configuration file: auditd.conf's keywords and audtrace's trace lines, every
error one line naming the file, the line and the keyword; what a file declares (slots);
the unit the project ships."""

from __future__ import annotations

from pathlib import Path

import pytest
from audtrace.tracer.daemon import config, slots, unit
from audtrace.tracer.daemon.config import ConfigError
from audtrace.tracer.log_policy import MIB

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "audtrace.conf") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        slots.declare(config.read(path))
    msg = str(e.value)
    assert "\n" not in msg
    return msg.removeprefix(path)


def test_keywords_are_auditds_with_its_defaults(tmp_path) -> None:
    cfg = config.read(write(tmp_path, "log_file = /var/log/x/audit.log\nMax_Log_File = 2\n"
                            "num_logs = 7\nflush = SYNC\ndisk_full_action = exec:/bin/true\n"
                            "log_format = enriched\ntrace = kill --sig 15,12\n"))
    assert cfg.log_file == "/var/log/x/audit.log"
    assert cfg.log_format == "enriched"
    p = cfg.policy
    assert (p.max_log_file, p.num_logs, p.flush) == (2 * MIB, 7, "sync")
    assert (p.disk_full_action.name, p.disk_full_action.path) == ("exec", "/bin/true")
    # left out: Debian's auditd.conf
    assert p.disk_error_action.name == "suspend"
    assert p.max_log_file_action.name == "rotate"
    assert str(p.space_left) == "75 MiB" and p.admin_space_left_action.name == "suspend"
    assert cfg.traces[0].words == ("kill", "--sig", "15,12") and cfg.traces[0].line == 7


@pytest.mark.parametrize("text, where", [
    ("log_file = /tmp/a.log\nflush = sometimes\n", ":2: flush: 'sometimes'"),
    ("\n# c\nnum_logs = many\n", ":3: num_logs: 'many' is not a whole number"),
    ("disk_full_action = halt\n", ":1: disk_full_action: "),
    ("space_left_action = email\n", ":1: space_left_action: "),
    ("log_file = audit.log\n", ":1: log_file: 'audit.log': give the full path"),
    ("max_log_file = 1\nmax_log_file = 2\n", ":2: max_log_file: given twice (first on line 1)"),
    ("colour = blue\n", ":1: colour: unknown keyword"),
    ("just words\n", ":1: not `keyword = value`"),
    ("log_group = no-such-group-here\n", ":1: log_group: 'no-such-group-here': no such group"),
    ("name = box\n", ":1: name: is used only with name_format = user"),
    ("name_format = user\n", ":1: name_format: user needs `name = ...`"),
    ("plugin_dir = /no/such/dir\n", ":1: plugin_dir: /no/such/dir: no such directory"),
    ("num_logs = 1\nmax_log_file_action = rotate\ntrace = kill\n", ":2: max_log_file_action"),
    ("buffer = lots\ntrace = kill\n", ":1: buffer: "),
    ("trace = kill --sig 99\n", ":1: trace: kill: --sig: "),
    ("log_file = /tmp/a\n\ntrace = kill --frobnicate\n", ":3: trace: kill: "),
    ("trace = latency\n", ":1: trace: latency: its reports are histograms"),
    ("trace = nosuch\n", ":1: trace: nosuch: no such subcommand"),
    ("trace = kill -o /tmp/x.log\n", ":1: trace: kill: -o (the log is log_file)"),
    ("trace = kill --duration 5\n", ":1: trace: kill: --duration"),
    ("trace = kill 'unterminated\n", ":1: trace: "),
])
def test_an_error_is_one_line_naming_file_line_and_keyword(tmp_path, text, where) -> None:
    assert error(tmp_path, text).startswith(where)


def test_nothing_to_trace_is_refused(tmp_path) -> None:
    assert "nothing to trace" in error(tmp_path, "rules_dir = " + str(tmp_path) + "\n")


def test_auditd_keywords_audtrace_has_no_use_for_are_noted_not_refused(tmp_path) -> None:
    cfg = config.read(write(tmp_path, "tcp_listen_port = 60\ntrace = kill\n"))
    assert cfg.notes == [f"{tmp_path}/audtrace.conf:1: tcp_listen_port left alone: auditd's,"
                         " not audtrace's"]


def test_an_unreadable_file_is_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"/nope.conf: cannot read: No such file"):
        config.read(str(tmp_path / "nope.conf"))


def test_trace_lines_become_slots_keyed_for_reload(tmp_path) -> None:
    cfg = config.read(write(tmp_path, "trace = kill --sig 15\ntrace = bind --failed\n"
                            "trace = kill --sig 12 -b 1M\n"))
    got = slots.declare(cfg)
    assert [s.key for s in got] == ["trace kill 1", "trace bind 1", "trace kill 2"]
    assert got[2].part.buffer_bytes == 1 << 20
    assert got[0].part.buffer_bytes == cfg.buffer_bytes
    again = slots.declare(config.read(cfg.path))
    assert [s.fingerprint for s in again] == [s.fingerprint for s in got]


def test_rules_dir_is_read_in_augenrules_order(tmp_path) -> None:
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "10-b.rules").write_text("-a always,exit -F arch=b64 -S kill -k ten\n")
    (rules / "9-a.rules").write_text("-D\n-a always,exit -F arch=b64 -S tkill -k nine\n")
    (rules / "notes.txt").write_text("not a rule file\n")
    cfg = config.read(write(tmp_path, f"rules_dir = {rules}\nrules_source = audit\n"))
    (got,) = slots.declare(cfg)
    assert got.key == "rules"
    assert [r.keys for r in got.part.sub.audit_rules] == [("nine",), ("ten",)]


def test_a_bad_rule_names_its_file_and_line(tmp_path) -> None:
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "50.rules").write_text("# ok\n-a always,exit -S no_such_call\n")
    msg = error(tmp_path, f"rules_dir = {rules}\n")
    assert msg.startswith(f"{rules}/50.rules:2") or f"{rules}/50.rules:2" in msg


def test_natural_order_of_rule_files() -> None:
    names = ["10-base.rules", "9-x.rules", "99-end.rules", "a.rules"]
    assert sorted(names, key=slots.natural_key) == \
        ["9-x.rules", "10-base.rules", "99-end.rules", "a.rules"]


def test_the_shipped_unit_is_the_one_the_install_command_writes() -> None:
    shipped = (REPO / "packaging" / "audtrace.service").read_text()
    assert shipped == unit.text()
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line + "\n" in shipped


def test_install_writes_the_unit_with_the_given_launcher(tmp_path) -> None:
    path = unit.install(str(tmp_path), "/opt/audtrace/audtrace", "/etc/a.conf")
    text = Path(path).read_text()
    assert "ExecStart=/opt/audtrace/audtrace daemon --config /etc/a.conf\n" in text
    assert Path(path).stat().st_mode & 0o777 == 0o644


def test_the_shipped_example_configuration_is_good(tmp_path) -> None:
    text = (REPO / "packaging" / "audtrace.conf").read_text()
    # its plugin_dir need not exist on this machine
    text = text.replace("plugin_dir = /etc/audtrace/plugins.d", f"plugin_dir = {tmp_path}")
    got = slots.declare(config.parse(text, "audtrace.conf"))
    assert [s.key for s in got] == ["trace kill 1", "trace bind 1"]


def test_notifications_are_datagrams_to_notify_socket(tmp_path, monkeypatch) -> None:
    import socket

    from audtrace.tracer.daemon.notify import Notifier

    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        n = Notifier()
        import os

        assert "NOTIFY_SOCKET" not in os.environ     # not inherited by plugins and exec
        assert n.ready("tracing kill")
        assert s.recv(4096) == b"READY=1\nSTATUS=tracing kill"
        assert n.reloading("reloading")
        got = s.recv(4096).decode().split("\n")
        assert got[0] == "RELOADING=1" and got[1].startswith("MONOTONIC_USEC=")
    # systemd gone, or no socket at all: news, not a duty
    assert not n.send("STATUS=x")
    assert not Notifier("").ready("x")


def test_an_abstract_notify_socket(tmp_path) -> None:
    import os
    import socket

    from audtrace.tracer.daemon.notify import Notifier

    name = f"audtrace-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        assert Notifier("@" + name).stopping("bye")
        assert s.recv(4096) == b"STOPPING=1\nSTATUS=bye"
