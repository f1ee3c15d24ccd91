"""zeekml.sinks."""
