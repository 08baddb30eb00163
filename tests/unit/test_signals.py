from __future__ import annotations

import shutil
import signal
import subprocess

import pytest
from audtrace.compat.signals import parse_signals, signal_name


def test_parse_forms():
    assert parse_signals("15,12") == [15, 12]
    assert parse_signals("TERM") == [signal.SIGTERM]
    assert parse_signals("SIGTERM,usr2") == [signal.SIGTERM, signal.SIGUSR2]
    assert parse_signals(" sigkill , 9 ") == [9]  # blanks ignored, repeats dropped
    assert parse_signals("RTMIN+3") == [signal.SIGRTMIN + 3]
    assert parse_signals("sigrtmax-2,RTMIN") == [signal.SIGRTMAX - 2, signal.SIGRTMIN]
    assert parse_signals("IOT,CLD,POLL") == [signal.SIGABRT, signal.SIGCHLD, signal.SIGIO]
    assert parse_signals("0") == [0]


@pytest.mark.parametrize(
    ("spec", "bad"),
    [("TERM,FOO", "FOO"), ("99", "99"), ("RTMIN+40", "RTMIN+40"), ("RTMAX+1", "RTMAX+1"),
     ("SIGX", "SIGX"), ("-1", "-1")],
)  # fmt: skip
def test_parse_errors_name_the_token(spec, bad):
    with pytest.raises(ValueError) as err:
        parse_signals(spec)
    msg = str(err.value)
    assert repr(bad) in msg and "\n" not in msg


def test_parse_empty_token():
    with pytest.raises(ValueError, match="empty"):
        parse_signals("15,,2")


def test_names_match_python_signal_module():
    for sig in signal.Signals:
        if sig < signal.SIGRTMIN:
            assert parse_signals(sig.name) == [int(sig)]
            assert parse_signals(signal_name(int(sig))) == [int(sig)]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_names_match_bash_kill_l():
    """bash's `kill -l N` names every signal the way users type them."""
    script = 'for i in $(seq 1 64); do echo "$i $(kill -l $i)"; done'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        num, _, name = line.partition(" ")
        if not name:  # bash has no name for 32 and 33 (glibc's own signals)
            assert signal_name(int(num)) == f"SIG{num}"
            continue
        assert signal_name(int(num)) == "SIG" + name
        assert parse_signals(name) == [int(num)]
