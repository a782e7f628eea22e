"""Peak resident memory of a process, without psutil (Linux ``/proc``, else ``getrusage``).

>>> peak_rss_bytes() > 0
True
"""

from __future__ import annotations

import resource
import sys


def peak_rss_bytes(pid: int | None = None) -> int:
    """Peak resident set size in bytes (``VmHWM``, since the last reset) of this process or of
    process ``pid`` (0 if that process is gone or unreadable)."""
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if pid is not None:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ≥ 4.0); False if unsupported.

    Lets a benchmark report the peak of one configuration rather than of the whole run.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True
