"""The one family of errors a user is meant to read.

The CLI catches `EmbedstoreError`, prints its one-line message and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class EmbedstoreError(ValueError):
    """A user-facing failure whose message names the file/row/field or option and what was expected."""


class InputError(EmbedstoreError):
    """Input text files that cannot be read as the user asked (missing, bad column, empty text, bad UTF-8)."""


class StoreError(EmbedstoreError):
    """A vector store that is locked, incompatible, or lacks the vectors a caller asked for."""


class ConfigError(EmbedstoreError):
    """An option or configuration value outside what the command accepts."""
