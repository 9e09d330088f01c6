"""The one error type for bad input: the CLI prints it as one line and exits with code 2."""


class ConfigError(ValueError):
    """Bad user input: an unknown name, a bad value, a missing file. The message names the key and what is valid."""

    exit_code = 2


class TrainingFailed(RuntimeError):
    """The run started but could not finish (a non-finite loss, say); recorded as status 'failed'."""
