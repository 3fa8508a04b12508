"""The CLI's own error: bad input from the user (a file, a name, an option), exit code 2.

Only this and argparse's refusals exit 2; any other exception is a failure (exit 1) or a bug
(a traceback), never mistaken for a usage error.
"""


class UsageError(Exception):
    """Bad input from the user: exit code 2."""
