"""``python -m imsim.cli``: the same as the ``imsim`` command."""

from . import main

main()
