"""One thin agent per input topic: decode, call the core, send."""
