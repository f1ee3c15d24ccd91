"""zeekml.train."""
