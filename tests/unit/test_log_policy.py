"""auditd.conf's log settings: actions, space thresholds, the policy's checks."""

from __future__ import annotations

import os

import pytest
from audtrace.tracer.log_policy import (
    MIB,
    Action,
    Policy,
    Space,
    parse_action,
    parse_space,
    policy_from_settings,
)


def test_actions_are_auditds_words_in_any_case() -> None:
    assert parse_action("SUSPEND", "disk_full_action") == Action("suspend", "disk_full_action")
    assert parse_action(" ignore ", "disk_error_action").name == "ignore"
    assert parse_action("Keep_Logs", "max_log_file_action").name == "keep_logs"
    assert parse_action("stop", "space_left_action").name == "stop"


def test_exec_takes_a_full_path_to_an_executable_in_either_spelling(tmp_path) -> None:
    prog = tmp_path / "on-full"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    for text in (f"exec {prog}", f"exec:{prog}", f"EXEC  {prog}"):
        assert parse_action(text, "disk_full_action") == Action("exec", "disk_full_action",
                                                                str(prog))
    with pytest.raises(ValueError, match="full path"):
        parse_action("exec:on-full", "disk_full_action")
    with pytest.raises(ValueError, match="needs a program"):
        parse_action("exec", "disk_full_action")
    (tmp_path / "plain").write_text("")
    with pytest.raises(ValueError, match="not an executable"):
        parse_action(f"exec:{tmp_path / 'plain'}", "disk_full_action")


@pytest.mark.parametrize("word", ["halt", "single", "HALT"])
def test_halt_and_single_are_refused_with_what_to_say_instead(word) -> None:
    with pytest.raises(ValueError) as e:
        parse_action(word, "disk_full_action")
    msg = str(e.value)
    assert "\n" not in msg and "stop" in msg and "exec" in msg


def test_an_action_a_setting_does_not_take_is_refused() -> None:
    with pytest.raises(ValueError, match="choose one of ignore, syslog, suspend, exec, stop"):
        parse_action("rotate", "disk_error_action")      # auditd: no rotate on disk errors
    with pytest.raises(ValueError, match="email"):
        parse_action("email", "space_left_action")
    with pytest.raises(ValueError, match="choose one of"):
        parse_action("stop", "max_log_file_action")
    with pytest.raises(ValueError, match="takes no argument"):
        parse_action("suspend now", "disk_full_action")


def test_space_is_mib_or_a_percentage_of_the_filesystem() -> None:
    assert parse_space("75", "space_left") == Space(75)
    assert parse_space("5%", "space_left").bytes(1000 * MIB) == 50 * MIB
    assert Space(75).bytes(1) == 75 * MIB
    for bad in ("0%", "100%", "-3", "5MB", ""):
        with pytest.raises(ValueError):
            parse_space(bad, "space_left")


def test_rotation_needs_two_logs_and_incremental_flush_a_frequency() -> None:
    with pytest.raises(ValueError, match="disk_full_action rotate needs num_logs"):
        Policy(disk_full_action=Action("rotate", "disk_full_action"), num_logs=1)
    with pytest.raises(ValueError, match="max_log_file_action rotate needs num_logs"):
        Policy(max_log_file=MIB, num_logs=0)
    assert Policy(max_log_file=MIB, num_logs=0,
                  max_log_file_action=Action("keep_logs", "max_log_file_action"))
    with pytest.raises(ValueError, match="freq"):
        Policy(flush="incremental_async")
    with pytest.raises(ValueError, match="flush"):
        Policy(flush="sometimes")


def test_the_defaults_keep_tracing_and_count() -> None:
    p = Policy()
    assert (p.disk_full_action.name, p.disk_error_action.name) == ("ignore", "ignore")
    assert p.max_log_file == 0 and not p.watches_space


def test_auditd_conf_settings_make_a_policy() -> None:
    """The log part of auditd.conf as Debian ships it, plus thresholds and an exec."""
    conf = {
        "log_file": "/var/log/audit/audit.log", "log_group": "0", "flush": "INCREMENTAL_ASYNC",
        "freq": "50", "max_log_file": "8", "num_logs": "5", "max_log_file_action": "ROTATE",
        "space_left": "75", "space_left_action": "SYSLOG", "admin_space_left": "5%",
        "admin_space_left_action": "SUSPEND", "disk_full_action": "SUSPEND",
        "disk_error_action": f"exec {os.path.realpath('/bin/true')}",
        "priority_boost": "4",          # not the log's: left alone
    }
    p = policy_from_settings(conf)
    assert p.flush == "incremental_async" and p.freq == 50 and p.group == 0
    assert p.max_log_file == 8 * MIB and p.num_logs == 5
    assert p.max_log_file_action.name == "rotate"
    assert p.space_left == Space(75) and p.admin_space_left == Space(5, percent=True)
    assert p.space_left_action.name == "syslog" and p.admin_space_left_action.name == "suspend"
    assert p.disk_error_action.path == os.path.realpath("/bin/true")
    with pytest.raises(ValueError, match="halt"):
        policy_from_settings({"disk_full_action": "HALT"})
    with pytest.raises(ValueError, match="whole number"):
        policy_from_settings({"num_logs": "five"})
    with pytest.raises(ValueError, match="no such group"):
        policy_from_settings({"log_group": "no-such-group-here"})
