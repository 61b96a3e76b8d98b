"""Process defaults for runs of our own model, applied by its start-up and nowhere else.

The ``.pth`` hook used to set these for every lm-eval process, ``--model hf`` runs included;
a plug-in must leave runs it was not asked for as they were.
"""

from __future__ import annotations

import os
import sys

OMP_WAIT_POLICY = "PASSIVE"


def apply_cpu_defaults() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy.

    On 2 cores it decoded 1.3-2.6x faster than the default in benchmarks/bench_cpu_settings.py
    (docs/performance.md). OpenMP reads the variable once, when torch loads, so this must run
    before anything imports torch; afterwards it would be too late, and it leaves the
    environment alone. Thread counts stay with the ``num_threads`` model_arg.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
