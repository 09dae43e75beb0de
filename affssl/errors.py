"""The one exception type the CLI turns into a one-line message and exit code 2.

Raise `UserError` (or a subclass) for anything a person can fix: a bad spec, a missing file, a
corrupt image, a checkpoint of the wrong kind. Its message names the problem and the fix.
Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem in the user's input; the message says what is wrong and how to fix it."""
