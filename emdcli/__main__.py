"""``python -m emdcli``: the ``emd`` command line."""

from .cli import main

main()
