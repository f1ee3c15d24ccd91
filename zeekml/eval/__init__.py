"""zeekml.eval."""
