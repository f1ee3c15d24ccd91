"""zeekml.policy."""
