"""The two ways a command fails: the user's mistake (exit 2) and a run that cannot go on (exit 1)."""


class UserError(Exception):
    """A mistake of the user's (bad option, missing data, wrong shape): one line, exit 2."""


class RunError(Exception):
    """A run that cannot go on (diverged, a worker or peer died, a full disk): one line, exit 1.
    What finished is kept; rerunning the same command resumes."""


class MnistcompareWarning(UserWarning):
    """Something the user should know that does not stop the run (the commands print it as one line)."""
