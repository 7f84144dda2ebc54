"""Errors caused by input the user controls: the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad data, bad params or a missing file: the message names the thing and what is allowed."""
