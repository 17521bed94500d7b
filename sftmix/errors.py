"""The one exception type that means "the user gave us bad input".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user (missing file, malformed row, unknown option...). Message is one line."""
