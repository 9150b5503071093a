"""Exception types that map onto the CLI's exit codes (0 ok, 1 failure, 2 usage or config error)."""

from __future__ import annotations


class TransferdError(Exception):
    """A failure the user must look at; exit code 1."""

    exit_code = 1


class UsageError(TransferdError):
    """Bad command line or bad input that the user can fix; exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A config problem. The message names the file, the key and what was expected."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


class ConfigErrors(ConfigError):
    """Several config problems, one line each (`check-config` and every command report them all at once)."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        Exception.__init__(self, "\n".join(str(e) for e in self.errors))
        self.file, self.key = first.file, first.key
