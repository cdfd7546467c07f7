"""OmegaConf resolvers segpets' configs use; registered when ``segpets`` is imported, before
any config is composed.

``${segpets.loader_workers:N}``: DataLoader workers for each of N processes on this machine.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def usable_cpus() -> int:
    """CPUs this process may run on (a SLURM/cgroup allocation, not the whole machine)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def loader_workers(processes: int | str = 1) -> int:
    """Workers per training process: its share of the usable CPUs, one left for the process
    itself (at least 1): 16 CPUs and 1 GPU → 15; 16 CPUs and 4 GPUs → 3."""
    share = usable_cpus() // max(1, int(processes))
    return max(1, share - 1)


def register() -> None:
    OmegaConf.register_new_resolver("segpets.loader_workers", loader_workers, replace=True)
