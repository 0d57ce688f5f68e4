"""Typed errors of the tasks package, raised with a message a user can act on."""


class TaskDataError(Exception):
    """Task data is missing, empty or malformed (the message names the file and the problem)."""
