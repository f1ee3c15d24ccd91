"""zeekml.cli."""
