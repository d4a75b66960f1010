"""Every method's results and saved arrays, bit for bit, against the golden
runs recorded before the method modules were restructured
(``tests/golden_methods.py``: result metrics and SHA-256 of the classifier,
penalty and exemplar memory of each step directory).

XLA's CPU code is deterministic for one program on one machine kind; a
machine of another CPU kind may round differently, so a mismatch prints
the moved leaves' sums beside the hashes to tell rounding from a bug.
"""

import json

from tests import golden_methods


def test_every_method_is_bit_identical_to_its_golden_run():
  with open(golden_methods.GOLDEN) as f:
    expected = json.load(f)
  actual = golden_methods.compute()
  assert sum(len(actual[run]) for run in ("linear", "lucir")) == 15
  if expected["machine"] == actual["machine"]:
    assert golden_methods.differences(expected, actual) == []
  else:  # another CPU or jaxlib rounds differently: close, not equal
    assert golden_methods.close_differences(expected, actual) == []
