"""emdcli: exact Earth Mover's Distances and their gradients on chain (and tree) spaces.

>>> import numpy as np, emdcli
>>> emdcli.emd(np.array([[0.5, 0.5, 0.0]]), np.array([2]))
array([1.5])

The public names are imported on first use, so ``emd --help`` loads no numpy or Numba.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "emd": "api",
    "emd2": "api",
    "chain_hessian": "api",
    "EMDInputError": "errors",
    "Chain": "spaces",
    "compute_dataset": "jobs.engine",
    "wasserstein": "wasserstein",
    "flows": "transport",
    "plan": "transport",
    "learn_ground": "learn",
    "build_tree": "treebuild",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
