"""tests/tiers.py: the inner loop's split by measured time reads and writes what it says."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiers  # noqa: E402


def test_junit_names_become_node_ids():
  assert tiers.node_id("tests.test_a", "test_b[x-1]") == "tests/test_a.py::test_b[x-1]"
  assert tiers.node_id("tests.test_a.TestC", "test_d") == "tests/test_a.py::TestC::test_d"


def test_only_unmarked_cases_over_the_limit_are_listed(tmp_path):
  path = str(tmp_path / "slow.txt")
  times = {"tests/test_a.py::test_quick": tiers.SLOW_SECONDS / 2,
           "tests/test_a.py::test_long[1]": tiers.SLOW_SECONDS * 3,
           "tests/test_a.py::test_marked": tiers.SLOW_SECONDS * 10}
  listed = tiers.write_list(times, {"tests/test_a.py::test_marked"}, path)
  assert listed == ["tests/test_a.py::test_long[1]"]
  assert tiers.read_list(path) == {"tests/test_a.py::test_long[1]"}
  assert tiers.read_list(str(tmp_path / "missing.txt")) == set()


def test_the_committed_list_names_collected_tests(request):
  """Every listed case still exists (a renamed test would silently join the inner loop)."""
  collected = request.config.cnnlab_collected    # conftest.py: every case, before -m / -k
  if len(collected) < 100:                       # one file or a few named: nothing to check
    return
  stale = tiers.read_list() - collected
  assert not stale, f"tests/slow_tests.txt lists cases that no longer exist: {sorted(stale)[:5]}"
