"""tests/summary.py against JUnit XML written by a real pytest run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SUMMARY = Path(__file__).resolve().parents[1] / "summary.py"

SAMPLE = '''
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("setup fails")

def test_ok():
    pass

def test_ok_too():
    pass

def test_fails():
    assert False

def test_skipped():
    pytest.skip("not here")

def test_error(broken):
    pass
'''


def summary(*args: str) -> list[str]:
    r = subprocess.run([sys.executable, str(SUMMARY), *args], capture_output=True, text=True,
                       timeout=30, check=True)
    return r.stdout.splitlines()


def test_counts_a_real_pytest_run_and_a_run_that_did_not_finish(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    xml = tmp_path / "sample.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={xml}", str(tmp_path / "test_sample.py")],
                   capture_output=True, cwd=tmp_path, timeout=120)
    (tmp_path / "empty.xml").write_text("")

    lines = summary(f"host={xml}", f"vm btf={tmp_path / 'empty.xml'}")
    assert lines[0] == "host: 2 passed, 2 failed, 1 skipped"   # the error counts as failed
    assert lines[1].startswith("vm btf: did not finish")
    assert lines[-1] == "2 passed, 3 failed"                   # the closing line CI reads
