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


class ConfigError(SlipsqError):
    """The configuration (file or flags) is wrong; the message names the key."""

    code = 3


class ModelError(SlipsqError):
    """A model file or models folder cannot be used."""

    code = 4


class SystemSetupError(SlipsqError):
    """The system lacks what inline mode needs: root, NFQUEUE, iptables/ipset, a free queue."""

    code = 5
