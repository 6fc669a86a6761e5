"""``python -m spattn.cli``: the ``spattn`` command."""

from . import main

main()
