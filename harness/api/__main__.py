"""`python -m layerbench`: the same as the `layerbench` command."""

from layerbench.harness.cli import main

main()
