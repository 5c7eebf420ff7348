"""Error types. Every message is one line naming the bad value and what would be valid."""


class LoraZooError(Exception):
    """Base class for every error lorazoo raises on bad input or bad files."""


class ConfigError(LoraZooError, ValueError):
    """An AdapterConfig or projection option has an invalid value."""


class UnknownProjectionError(ConfigError, KeyError):
    """A projection name is not in the registry."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class TargetModulesError(LoraZooError, ValueError):
    """The target module patterns matched no nn.Linear of the model."""


class LayoutMismatchError(LoraZooError, ValueError):
    """An adapter was made for a base model whose adapted modules differ from this one."""


class AdapterFileError(LoraZooError, OSError):
    """An adapter directory is missing a file, or a file is truncated, corrupt or unsafe."""


class AdapterStateError(LoraZooError, RuntimeError):
    """An operation does not fit the adapter's current state (merged, unknown adapter name...)."""


class ModelUnavailableError(LoraZooError, OSError):
    """A base model is neither a local directory nor reachable on the hub (or its package is not installed)."""
