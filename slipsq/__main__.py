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
    except OSError as e:  # what click writes itself (--help, --version, usage) into a full or closed output
        if "--debug" in sys.argv[1:]:  # (as run_guarded: the traceback is what --debug asks for)
            raise
        _unflushable()
        if isinstance(e, BrokenPipeError):  # `| head`: not an error worth a message (as cli.run_guarded)
            sys.exit(0)
        sys.stderr.write(f"slipsq: stopped: {e.strerror or e}\n")
        sys.exit(1)


def _unflushable() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush of what is still buffered
    for the output that failed does not print a second error on the way out."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    run()
