"""Compile a set of functions together for one target: the registration behind every kernel.

A ``JitRegistry`` collects functions with its ``register`` decorator; ``compile(jit)`` compiles all
of them with ``jit`` (``numba.njit``, ``numba.cuda.jit(device=True)``, ...) in one shared namespace,
so a call from one registered function to another resolves to the other's compiled form on that
target. Nothing else has to list the functions.

The functions are rebound as globals of a fresh namespace (not closures): numba keys the on-disk
cache of a closure on its pickled free variables, which differ in every process, so closures over
jitted helpers would recompile every time.
"""

from __future__ import annotations

import types


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
