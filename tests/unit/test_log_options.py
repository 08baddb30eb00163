"""-o's log options on the command line: parsed, checked, turned into a Policy. Only
refusals go through the command itself (they end before anything is set up)."""

from __future__ import annotations

import click
import pytest
from audtrace.tracer import options
from audtrace.tracer.log_policy import MIB, parse_action
from audtrace.tracer.subcommands.kill import command
from click.testing import CliRunner


def common(output: str | None = "/var/log/x.log", full: str = "ignore", error: str = "ignore",
           size: int | None = None, num: int | None = None) -> dict:
    return {"output": output, "disk_full_action": parse_action(full, "disk_full_action"),
            "disk_error_action": parse_action(error, "disk_error_action"),
            "max_log_file": size, "num_logs": num}


def test_defaults_keep_tracing_and_rotation_keeps_five_logs() -> None:
    p = options.log_policy(common())
    assert (p.disk_full_action.name, p.disk_error_action.name) == ("ignore", "ignore")
    assert p.max_log_file == 0 and p.num_logs == 0
    p = options.log_policy(common(size=8))
    assert p.max_log_file == 8 * MIB and p.num_logs == 5
    assert options.log_policy(common(full="rotate", num=3)).num_logs == 3
    assert options.log_policy(common(output=None)) is None


@pytest.mark.parametrize("kw", [{"full": "stop"}, {"size": 1}, {"num": 3}, {"error": "syslog"}])
def test_log_options_need_a_log(kw) -> None:
    with pytest.raises(click.UsageError, match="add -o FILE"):
        options.log_policy(common(output="-", **kw))


def test_num_logs_needs_something_that_rotates() -> None:
    with pytest.raises(click.UsageError, match="--num-logs needs"):
        options.log_policy(common(num=3))


@pytest.mark.parametrize("args, says", [
    (["--disk-full-action", "halt"], "does not shut the machine down"),
    (["--disk-full-action", "single"], "runlevel"),
    (["--disk-error-action", "rotate"], "choose one of ignore, syslog, suspend, exec, stop"),
    (["--disk-full-action", "exec:relative/prog"], "full path"),
    (["--max-log-file", "0"], "0 is not in the range"),
    (["--num-logs", "1000"], "1000 is not in the range"),
])
def test_bad_log_options_are_one_clear_line(args, says) -> None:
    r = CliRunner().invoke(command, [*args, "-o", "/nonexistent/x.log"])
    assert r.exit_code == 2 and says in r.output, r.output
    assert "Traceback" not in r.output
