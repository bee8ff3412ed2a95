"""``python -m emdcli.cli``: the ``emd`` command line."""

from . import main

main()
