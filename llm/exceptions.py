class ConfigNotFound(Exception):
    """The config (or its version) does not exist in the caller's project."""


class CredentialsMissing(Exception):
    """The project has no credentials for the provider its config names."""
