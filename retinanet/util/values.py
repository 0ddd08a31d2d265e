"""Tests of parsed JSON values, and their short description for messages, shared by the checkers.

JSON booleans are not numbers here, although Python's ``bool`` is an ``int``: ``true`` where
a number belongs is a mistake worth reporting.
"""
import math
import numbers

DESCRIPTION_LIMIT = 60  # characters of a value's repr quoted in a message


def is_integer(value):
    """True for an integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """True for a real number that is not a bool (NaN and infinities included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_number(value):
    """True for a number that is finite as a float: not NaN, not infinite, not an integer too
    large for a float (which COCO tools and the data loader would fail to convert)."""
    if not is_number(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def short_repr(value, limit=DESCRIPTION_LIMIT):
    """``repr(value)`` cut to ``limit`` characters, so a huge bad value cannot flood a report."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe(value, limit=DESCRIPTION_LIMIT):
    """``type repr`` text of a value for messages, e.g. ``str '3'`` or ``NoneType None``."""
    return f"{type(value).__name__} {short_repr(value, limit)}"
