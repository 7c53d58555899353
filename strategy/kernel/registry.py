"""How the kernel's one source becomes three compiled programs, and the units its rules use.

Every kernel function is registered with ``@kernel_function``. ``make_kernel(jit)`` compiles
all registered functions with ``jit`` (``numba.njit``, ``numba.cuda.jit(device=True)``, ...) in
one shared namespace (``strategy.jit_registry``), so a call from one kernel function to another
resolves to the other's compiled form on that target. Nothing else lists the kernel's functions.
"""

from __future__ import annotations

import math
import types

from strategy.jit_registry import JitRegistry

MS_PER_MINUTE = 60_000.0
MS_PER_HOUR = 3_600_000.0
MS_PER_DAY = 86_400_000
NEVER = -1.0e18  # "no previous exit/add" time
PF_NO_LOSS = 999.0  # profit factor reported when there is profit and no loss
BPS = 1.0e-4
SQRT_365 = math.sqrt(365.0)


KERNEL = JitRegistry("strategy.kernel")
kernel_function = KERNEL.register


def make_kernel(jit) -> types.SimpleNamespace:
    """The decision kernel compiled with ``jit``: ``k.step_bar``, ``k.finish``, ... (every
    registered function)."""
    return KERNEL.compile(jit)
