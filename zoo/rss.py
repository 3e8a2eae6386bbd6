"""Peak resident memory of this process in MiB (benchmarks, `zoo bench`, `zoo run --verbose`).

Reads VmHWM from /proc (reset at exec, unlike getrusage's ru_maxrss, which a child inherits from
the parent it was forked from); falls back to ru_maxrss elsewhere.
"""

import resource
import sys


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 << 20 if sys.platform == "darwin" else 1 << 10
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / scale / 1024
