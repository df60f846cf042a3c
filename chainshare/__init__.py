"""chainshare: a permissioned blockchain node for governed inter-agency data sharing."""

__version__ = "0.1.0"
CLIENT_VERSION = f"chainshare/v{__version__}/python3.11"
