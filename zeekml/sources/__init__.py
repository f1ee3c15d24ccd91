"""zeekml.sources."""
