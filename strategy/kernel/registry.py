"""How the kernel's one source becomes three compiled programs, and the units its rules use.

Every kernel function is registered with ``@kernel_function``. ``make_kernel(jit)`` compiles
all registered functions with ``jit`` (``numba.njit``, ``numba.cuda.jit(device=True)``, ...) in
one shared namespace, so a call from one kernel function to another resolves to the other's
compiled form on that target. Nothing else lists the kernel's functions.

The functions are rebound as globals of a fresh namespace (not closures): numba keys the on-disk
cache of a closure on its pickled free variables, which differ in every process, so closures over
jitted helpers would recompile every time.
"""

from __future__ import annotations

import math
import types

MS_PER_MINUTE = 60_000.0
MS_PER_DAY = 86_400_000
NEVER = -1.0e18  # "no previous exit/add" time
PF_NO_LOSS = 999.0  # profit factor reported when there is profit and no loss
BPS = 1.0e-4
SQRT_365 = math.sqrt(365.0)


class JitRegistry:
    """An ordered set of functions compiled together (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.functions: dict[str, types.FunctionType] = {}

    def register(self, f: types.FunctionType) -> types.FunctionType:
        """Decorator: ``f`` is part of this kernel; it is returned unchanged (plain Python)."""
        if f.__name__ in self.functions and self.functions[f.__name__] is not f:
            raise ValueError(f"{self.name}: two kernel functions named {f.__name__}")
        self.functions[f.__name__] = f
        return f

    def compile(self, jit) -> types.SimpleNamespace:
        """Every registered function compiled with ``jit``, as attributes of a namespace."""
        ns: dict = {}
        for f in self.functions.values():
            ns.update(f.__globals__)
        ns["__name__"] = self.name
        for name, f in self.functions.items():
            ns[name] = jit(types.FunctionType(f.__code__, ns, name, f.__defaults__, f.__closure__))
        return types.SimpleNamespace(**{name: ns[name] for name in self.functions})


KERNEL = JitRegistry("strategy.kernel")
kernel_function = KERNEL.register


def make_kernel(jit) -> types.SimpleNamespace:
    """The decision kernel compiled with ``jit``: ``k.step_bar_sub``, ``k.finish``, ... (every
    registered function)."""
    return KERNEL.compile(jit)
