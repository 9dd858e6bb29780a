"""syncd: mirror a CoreClaw account's run history into PostgreSQL."""

__version__ = "0.1.0"
