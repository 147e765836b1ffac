"""What decides a cell's arithmetic, pinned so a result never depends on how it was scheduled.

A source pretrained with 1 worker x 2 threads and again with 2 workers x 1 thread gave
different weights (a conv's reduction order follows its thread partition), and an AVX-512
machine picks other kernels than an AVX2 one. So:

- every cell runs with exactly :data:`CELL_THREADS` torch intra-op threads, whatever
  ``--workers`` / ``--threads`` say (those only decide how many cells run at once);
- on x86-64 the kernel family is pinned to AVX2 (ATen dispatch, oneDNN, MKL) unless the user
  set the variables: a newer CPU then computes what an AVX2 one does. The variables must be
  set before torch first dispatches, so :func:`pin_cpu_kernels` runs when ``experiments`` is
  imported, and again in every spawned worker (environment variables are inherited).

Each record carries :func:`arithmetic_card` (threads, torch, CPU capability), so a cell
computed under other arithmetic can be told apart.
"""

from __future__ import annotations

import os
import platform

__all__ = ["CELL_THREADS", "PINNED_ENV", "pin_cpu_kernels", "arithmetic_card"]

CELL_THREADS = 1
"""torch intra-op threads of every cell (one: N cells in parallel use N cores best on a small
machine, and one thread has a single reduction order)."""

PINNED_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}


def pin_cpu_kernels() -> dict[str, str]:
    """Set :data:`PINNED_ENV` where unset (x86-64 only); returns what is in force."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    for k, v in PINNED_ENV.items():
        os.environ.setdefault(k, v)
    return {k: os.environ[k] for k in PINNED_ENV}


def arithmetic_card() -> dict:
    """Threads, torch build and the CPU kernel family in force in this process."""
    import torch

    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older torch: the field is informative only
        cap = ""
    return {"threads": torch.get_num_threads(), "cpu_capability": cap, "torch": torch.__version__}
