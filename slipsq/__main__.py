"""`python -m slipsq` and the `slipsq` command (pyproject.toml's entry point is `run`)."""

import sys


def run() -> None:
    """slipsq.cli.main, with a Ctrl-C during start-up (the imports, before any command handles it)
    ending as one later does: one line and exit status 130, not a traceback."""
    if sys.stdout is None:  # started with standard output closed (`>&-`): nothing could be said
        if sys.stderr is not None:
            sys.stderr.write("slipsq: standard output is closed (redirect it, e.g. > /dev/null)\n")
        sys.exit(1)
    try:
        from slipsq.cli import main

        main()
    except KeyboardInterrupt:
        sys.stderr.write("slipsq: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    run()
