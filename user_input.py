"""What the scripts share about bad input: InputError, which they print on one line, and argparse's number types."""


class InputError(Exception):
    """A bad input from the user (file, folder, flag): the scripts print it on one line and exit 1."""


def one_line(error):
    """An exception's message on one line, or its type's name where it has none."""
    return " ".join(str(error).split()) or type(error).__name__


def positive_int(text):
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def non_negative_int(text):
    """argparse type: an integer of at least 0 (a seed: NumPy's generators take no negative one)."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def positive_float(text):
    """argparse type: a finite number above 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value
