"""One exception type for mistakes a user can fix; the CLI prints it as a single line."""


class EercfError(Exception):
    """A user-facing error: bad input, missing file, wrong format. Message names the input."""
