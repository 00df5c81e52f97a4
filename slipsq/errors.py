"""slipsq's own exceptions: each carries one line a person can act on, and an exit code.

The CLI prints `slipsq: <message>` and exits with `code`; a traceback only with `--debug`.
"""


class SlipsqError(Exception):
    """An error with a message for a person. Subclasses pick the exit code."""

    code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(SlipsqError):
    """A file or stream slipsq was asked to read is missing, unreadable or not what it claims."""

    code = 2


class RefusedError(SlipsqError):
    """A request understood and not carried out: unblock of an address that is not blocked, block of a
    protected one (exit 1, "the command failed", whether the daemon or the store answered)."""

    code = 1


class ConfigError(SlipsqError):
    """The configuration (file or flags) is wrong; the message names the key."""

    code = 3


class ModelError(SlipsqError):
    """A model file or models folder cannot be used."""

    code = 4


class SystemSetupError(SlipsqError):
    """The system lacks what inline mode needs: root, NFQUEUE, iptables/ipset, a free queue."""

    code = 5


class UsageError(SlipsqError):
    """Options that do not go together (the message says which), as click's own usage errors."""

    code = 2


# every exit status of slipsq, for --help and the README (keep both in step with this table)
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success; replay: every input was read whole"),
    (1, "the command failed (e.g. the daemon refused a request)"),
    (2, "bad usage, or an input missing, unreadable, not a capture or flow file, or damaged (replay "
        "prints its results first, then one line per damaged input; `blocks`: damaged rows in the block "
        "store), or a result file (-o) that cannot be written"),
    (3, "bad configuration (the message names the key and file); `status`: no daemon runs (as "
        "`systemctl status` says of a stopped unit)"),
    (4, "unusable models"),
    (5, "the system lacks what inline mode needs (root, NFQUEUE, iptables/ipset), or no daemon runs "
        "to answer a command that needs one"),
    (70, "internal error: a bug in slipsq (--debug shows the traceback; please report it)"),
    (130, "interrupted (Ctrl-C)"),
    (143, "terminated (SIGTERM); a replay keeps what it analysed, its summary marked interrupted"),
)
