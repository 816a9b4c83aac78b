"""The inner loop's split, by measured time: ``python -m pytest -q -m "not slow"`` skips the
tests marked ``@pytest.mark.slow`` in their files (long end-to-end runs, subprocess trainings)
and the test cases listed in ``tests/slow_tests.txt`` — every other case whose call took more
than ``SLOW_SECONDS`` in the last measured full run on a 2-core machine. The list is data, not
judgement: regenerate it after a change that moves test times

    python -m pytest -q --junitxml=/tmp/junit.xml          # the full suite
    python tests/tiers.py /tmp/junit.xml                    # rewrites tests/slow_tests.txt

(conftest.py's ``pytest_collection_modifyitems`` reads it; a case missing from the file is in
the inner loop, so a new test is fast until measured otherwise).
"""
from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET

SLOW_SECONDS = 2.0
LIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow_tests.txt")


def read_list(path: str = LIST) -> set[str]:
  """Node ids (``tests/test_x.py::test_y[case]``) listed in ``path``."""
  if not os.path.exists(path):
    return set()
  with open(path) as f:
    return {line.split("#")[0].strip() for line in f if line.split("#")[0].strip()}


def node_id(classname: str, name: str) -> str:
  """The pytest node id of a junit-xml test case."""
  parts = classname.split(".")
  module = "/".join(parts[:2]) + ".py" if len(parts) >= 2 else classname
  return "::".join([module, *parts[2:], name])


def measured(junit_path: str) -> dict[str, float]:
  cases = ET.parse(junit_path).getroot().iter("testcase")
  return {node_id(c.get("classname"), c.get("name")): float(c.get("time") or 0) for c in cases}


def write_list(times: dict[str, float], already_slow: set[str] = frozenset(),
               path: str = LIST) -> list[str]:
  slow = sorted(n for n, t in times.items() if t > SLOW_SECONDS and n not in already_slow)
  with open(path, "w") as f:
    f.write(f"# Test cases over {SLOW_SECONDS} s in the last measured full run (tests/tiers.py"
            " says how to regenerate).\n# Marked slow by conftest.py: the inner loop skips "
            "them; the full suite runs them.\n")
    for n in slow:
      f.write(f"{n}  # {times[n]:.1f} s\n")
  return slow


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    sys.exit("usage: python tests/tiers.py JUNIT_XML")
  times = measured(argv[1])
  # Cases marked slow in their files need no entry; the junit file does not say which those
  # are, so ask pytest.
  import subprocess
  out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "slow",
                        "-p", "no:xdist", "-p", "no:cacheprovider",
                        "--override-ini=addopts="],
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(LIST)),
                       env={**os.environ, "CNNLAB_TIERS_FILE_ONLY": "1"})
  marked = {l.strip() for l in out.stdout.splitlines() if "::" in l}
  slow = write_list(times, marked)
  fast = [n for n in times if n not in marked and n not in slow]
  print(f"{len(slow)} cases listed; inner loop: {len(fast)} of {len(times)} cases "
        f"({len(fast) / len(times):.0%}), {sum(times[n] for n in fast):.0f} s of test time")


if __name__ == "__main__":
  main(sys.argv)
