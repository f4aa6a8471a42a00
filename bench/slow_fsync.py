"""Run a program with every fsync made slower, as on a slow SD card.

    python bench/slow_fsync.py MS serve --port ...   # kintofs serve, each fsync MS ms longer

throughput.py --fsync-delay-ms starts kintofs this way, and slows its own
fsync micro-benchmark with install(): the serial durable-write rate and
kintofs are then measured against the same disk.  Only the wait is
simulated (a card also writes slower); os.fsync and os.fdatasync sleep,
then sync for real.
"""

import os
import sys
import time


def install(delay_ms):
    """Make os.fsync and os.fdatasync of this process ``delay_ms`` ms slower."""
    delay = delay_ms / 1000

    def slowed(real):
        def sync(fd):
            time.sleep(delay)
            return real(fd)

        return sync

    os.fsync, os.fdatasync = slowed(os.fsync), slowed(os.fdatasync)


if __name__ == "__main__":
    install(float(sys.argv[1]))
    from kintofs.cli import main

    sys.exit(main(sys.argv[2:]))
