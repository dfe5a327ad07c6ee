"""gateway: a reverse-proxy API gateway that holds upstream credentials and paces every call."""

__version__ = "0.1.0"
