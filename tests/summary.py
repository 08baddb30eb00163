"""One summary of several pytest runs, from their JUnit XML files.

    python3 tests/summary.py [LABEL=]FILE.xml ...

Prints one line per run ("LABEL: 3 passed, 0 failed, 1 skipped") and, last, the totals as
"N passed, N failed": the closing line CI reads. Errors count as failed. A missing or
unreadable file is a run that did not finish: it counts as one failure, so it cannot pass
unnoticed. Standard library only: tests/run and vagrant/vm-lane call it with any python3.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    finished: bool = True


def read(path: Path) -> Counts:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return Counts(failed=1, finished=False)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    out = Counts()
    for s in suites:
        tests, skipped = int(s.get("tests", 0)), int(s.get("skipped", 0))
        failed = int(s.get("failures", 0)) + int(s.get("errors", 0))
        out.failed += failed
        out.skipped += skipped
        out.passed += max(tests - failed - skipped, 0)
    return out


def main(argv: list[str]) -> int:
    total = Counts()
    for arg in argv:
        label, _, name = arg.partition("=") if "=" in arg else (Path(arg).stem, "", arg)
        c = read(Path(name))
        if c.finished:
            print(f"{label}: {c.passed} passed, {c.failed} failed, {c.skipped} skipped")
        else:
            print(f"{label}: did not finish (no readable {name})")
        total.passed += c.passed
        total.failed += c.failed
    print(f"{total.passed} passed, {total.failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
