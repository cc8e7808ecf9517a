"""The one error type caikit raises for bad input; the CLI turns it into one line and exit code 2."""


class CaikitError(Exception):
    """Bad input or bad usage. The message is a single line that says what is wrong and where."""

    exit_code = 2


def located(path, line: int | None, reason: str) -> CaikitError:
    """An error pointing at `path:line` (stdin is shown as `<stdin>`)."""
    where = "<stdin>" if str(path) == "-" else str(path)
    if line is not None:
        where = f"{where}:{line}"
    return CaikitError(f"{where}: {reason}")


class FieldError(CaikitError):
    """A bad value of a library object's own field (`max_new_tokens`, a PM's `path`). The library
    names its field; each front end names it as its user writes it: `named({"max_new_tokens":
    "--max-new-tokens"})` on the command line, `max_tokens` in an HTTP request."""

    def __init__(self, field: str, value, reason: str):
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{field}={value!r}: {reason}")

    def named(self, names: dict[str, str]) -> CaikitError:
        return CaikitError(f"{names.get(self.field, self.field)} {self.value}: {self.reason}")


class FailedCheck(CaikitError):
    """A check the user asked for failed (e.g. `label --min-agreement`): one line, exit code 1."""

    exit_code = 1
