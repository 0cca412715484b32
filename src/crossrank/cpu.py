"""What CPU this process runs on: the cores it may really use and the instruction sets it has.

The core count is the smaller of the affinity mask and the cgroup CPU quota (v2 ``cpu.max`` or
v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, on this process's cgroup and each parent),
rounded down and at least 1. ``$CROSSRANK_THREADS`` overrides it. A container limited to 2 CPUs on
a 64-core node therefore starts 2 streams, not 64 that would be throttled.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

from crossrank.errors import ConfigError

__all__ = [
    "THREADS_ENV",
    "available_cores",
    "available_memory",
    "cgroup_cpu_limit",
    "cpu_flags",
    "int8_dot_product",
]

#: environment variable that sets the thread count, overriding affinity and cgroup quota
THREADS_ENV = "CROSSRANK_THREADS"

# instruction-set flags from /proc/cpuinfo that decide which engine is fastest
_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def available_cores() -> int:
    """Return how many cores this process may use: ``$CROSSRANK_THREADS``, else affinity and quota.

    Raises:
        ConfigError: ``$CROSSRANK_THREADS`` is set but is not a positive integer.
    """
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"${THREADS_ENV} must be a positive integer (got {env!r}); unset it or set e.g. 4")
        return n
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.floor(limit))
    return max(1, cores)


def cgroup_cpu_limit(
    root: str | os.PathLike[str] = "/sys/fs/cgroup", proc: str | os.PathLike[str] = "/proc/self/cgroup"
) -> float | None:
    """Return the CPU quota of this process's cgroup in cores (e.g. ``1.5``), or ``None`` if unlimited.

    Reads cgroup v2 (``0::/path`` in ``proc``, ``cpu.max`` under ``root``) or v1 (the ``cpu``
    controller's line, ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` under ``root/cpu`` or
    ``root/cpu,cpuacct``). The tightest quota on the cgroup and its parents wins. Unreadable or
    malformed files count as no limit.
    """
    root = Path(root)
    try:
        lines = Path(proc).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    limits: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2 unified hierarchy
            for folder in _ancestors(root, path):
                q = _v2_quota(folder / "cpu.max")
                if q is not None:
                    limits.append(q)
        elif "cpu" in controllers.split(","):
            for mount in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
                for folder in _ancestors(mount, path):
                    q = _v1_quota(folder)
                    if q is not None:
                        limits.append(q)
    return min(limits) if limits else None


def available_memory(
    meminfo: str | os.PathLike[str] = "/proc/meminfo",
    root: str | os.PathLike[str] = "/sys/fs/cgroup",
    proc: str | os.PathLike[str] = "/proc/self/cgroup",
) -> int | None:
    """Return the bytes this process may still allocate, or ``None`` when nothing says.

    The smaller of the kernel's ``MemAvailable`` and what the cgroup's memory limit leaves
    (v2 ``memory.max - memory.current``, v1 ``memory.limit_in_bytes - memory.usage_in_bytes``),
    on the cgroup and each parent.
    """
    found: list[int] = []
    try:
        for line in Path(meminfo).read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        lines = Path(proc).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    base = Path(root)
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            pairs = [(f / "memory.max", f / "memory.current") for f in _ancestors(base, path)]
        elif "memory" in controllers.split(","):
            folders = _ancestors(base / "memory", path)
            pairs = [(f / "memory.limit_in_bytes", f / "memory.usage_in_bytes") for f in folders]
        else:
            continue
        for limit_file, usage_file in pairs:
            try:
                limit = limit_file.read_text(encoding="utf-8").strip()
                usage = int(usage_file.read_text(encoding="utf-8").strip())
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            if limit.isdigit() and int(limit) < 1 << 60:  # v1 writes a huge number for "no limit"
                found.append(max(0, int(limit) - usage))
    return min(found) if found else None


def _ancestors(mount: Path, path: str) -> list[Path]:
    """Return the cgroup's folder under ``mount`` and each parent up to ``mount`` (which exist)."""
    parts = [p for p in path.strip().split("/") if p and p not in (".", "..")]
    folders = [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [f for f in folders if f.is_dir()]


def _v2_quota(file: Path) -> float | None:
    try:
        fields = file.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text(encoding="utf-8").strip())
        period = int((folder / "cpu.cfs_period_us").read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """Return the instruction-set flags of this CPU that crossrank's engine choice reads.

    An empty set where ``/proc/cpuinfo`` cannot be read (not Linux).
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.partition(":")[2].split())
            return frozenset(f for f in _FLAGS if f in have)
    return frozenset()


def int8_dot_product(flags: frozenset[str] | None = None) -> bool:
    """Return whether the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX).

    Static int8 graphs (OpenVINO) beat dynamic int8 (ONNX Runtime) only with them: on an AVX2-only
    CPU the OpenVINO graph measured about half ONNX Runtime's speed (docs/benchmarks.md).
    """
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
