"""One exception type for every input the user can fix: the message says what is wrong and how to fix it."""


class ConfigError(ValueError):
    """A user-fixable problem with the configuration, the data or a model directory."""
