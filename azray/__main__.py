"""`python -m azray`: the same as the `azray` command."""

from azray.cli import main

main()
