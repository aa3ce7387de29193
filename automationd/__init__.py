"""automationd: a self-hosted automations daemon for workflow platforms."""

__version__ = "0.1.0"
