"""What this process may use of the machine: CPUs allowed by affinity and by a cgroup CPU quota."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def available_cpus(cgroup: Path = CGROUP) -> int:
    """CPUs this process may actually use: its affinity mask, capped by a cgroup CPU quota (Docker --cpus,
    Kubernetes limits, CI runners). `os.cpu_count()` counts the host's CPUs and would oversubscribe them."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    quota = cgroup_quota(cgroup)
    return max(1, min(allowed, math.ceil(quota))) if quota else max(1, allowed)


def cgroup_quota(cgroup: Path = CGROUP) -> float | None:
    """The CPU quota in CPUs (2.5 for `--cpus 2.5`), or None when unlimited or unknown."""
    try:  # cgroup v2: "max 100000" or "250000 100000"
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None
