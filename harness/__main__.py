"""`python -m layerbench`: the same as the `layerbench` command."""

from layerbench.cli import main

main()
