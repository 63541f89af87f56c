"""Errors raised on bad input. Stage entry points turn them into a message and a non-zero exit."""


class DataError(ValueError):
    """Input data that breaks the competition's data contract.

    The message always names the offending file and, where there is one, the row id.
    """
