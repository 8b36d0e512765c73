"""Errors meant for the person at the terminal: the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """Bad input or configuration: the message names the thing and what to do about it."""
