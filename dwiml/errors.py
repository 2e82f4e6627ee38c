"""The error raised for bad user input: files, subjects, groups, config keys."""


class DwimlError(Exception):
    """Bad input, reported to the user as one line naming the file, subject, group or key."""
