"""Stand-ins for modules that Typer's help formatter imports but ``emd`` rarely uses.

``typer.rich_utils`` imports ``rich.markdown`` (with markdown-it, 60 ms: a quarter of
``emd --help``) for its Markdown mode, which ``emd`` does not use, and ``rich.traceback``
(with Pygments, 25 ms) for tracebacks, which only an internal error shows. Each gets a
stand-in module whose one class imports the real module when it is first used (called, or
an attribute read); any other attribute of the stand-in does the same.
"""

import importlib
import sys
import types

DEFERRED = {"rich.markdown": "Markdown", "rich.traceback": "Traceback"}


class _Forwarding(type):
    """The metaclass of a stand-in class: its attributes (``Traceback.from_exception``) and
    instances (``Markdown(text)``) are the real class's."""

    def __getattr__(cls, attr):
        if attr.startswith("__"):  # what the import system and typing ask of any object
            raise AttributeError(attr)
        return getattr(cls.real(), attr)

    def __call__(cls, *args, **kwargs):
        return cls.real()(*args, **kwargs)


def defer(module, name):
    """Put a stand-in for ``module`` in ``sys.modules`` (unless it is imported already)."""
    if module in sys.modules:
        return
    stand_in = types.ModuleType(module)

    def load():
        if sys.modules.get(module) is stand_in:
            del sys.modules[module]
        return importlib.import_module(module)

    def forward(attr):
        if attr.startswith("__"):  # ``from module import name`` asks for __path__
            raise AttributeError(attr)
        return getattr(load(), attr)

    stand_in.__getattr__ = forward
    setattr(stand_in, name, _Forwarding(name, (), {"real": staticmethod(
        lambda: getattr(load(), name))}))
    parent, _, child = module.rpartition(".")
    sys.modules[module] = stand_in
    setattr(importlib.import_module(parent), child, stand_in)


def defer_all():
    for module, name in DEFERRED.items():
        defer(module, name)
