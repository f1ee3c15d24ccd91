"""zeekml.runtime."""
