"""The functional core: pure functions `(state, event, now) -> (new state, outputs)`.

Nothing here touches Kafka, files or the clock; time is always passed in. The processors on the
engine (`streams/processors/`, `streams/runtime/engine.py`) are the shell.
"""
