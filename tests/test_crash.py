"""The crash test (tests/crash/crashtest.py) with counts small enough for CI.

Run it longer by hand: ``python tests/crash/crashtest.py --cycles 50 --seconds 120``.
"""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash"))

import crashtest  # noqa: E402

CI_CYCLES = int(os.environ.get("KINTOFS_CRASH_CYCLES", "10"))
CI_SECONDS = float(os.environ.get("KINTOFS_CRASH_SECONDS", "30"))


@pytest.mark.slow  # kill cycles under load: soak-style
def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path):
    figures = crashtest.run(str(tmp_path / "data"), cycles=CI_CYCLES, seconds=CI_SECONDS, threads=4)
    print("crash test figures:", json.dumps(figures.as_dict()))
    assert figures.failures == []
    assert figures.cycles >= min(CI_CYCLES, 4), "too few kill cycles to mean anything"
    assert figures.writes_acknowledged >= 20 * figures.cycles // 2
    assert figures.objects_checked > figures.writes_acknowledged // 2
    # The kills did land in the middle of writes, not only between them.
    assert figures.in_flight_at_kill >= figures.cycles
    assert figures.max_first_write_ms < crashtest.FIRST_WRITE_LIMIT_SECONDS * 1000
