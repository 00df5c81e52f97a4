"""`python -m slipsq` is the `slipsq` command."""

from slipsq.cli import main

main()
