"""One exception type for every user-facing mistake.

Anything a user can cause (a bad flag, a missing file, an unknown model name,
a corrupt archive) raises :class:`CnnlabError` with a message that names the
file, field or flag and says what was expected. The CLI prints that message on
one line and exits with status 2; library callers can catch it like any
``ValueError``.
"""


class CnnlabError(ValueError):
    """A problem with the user's input, data or configuration (not a bug)."""
