"""The functional core: pure functions `(state, event, now) -> (new state, outputs)`.

Nothing here touches Kafka, files or the clock; time is always passed in. The agents in
`streams/agents/` and the gather processor in `streams/gather_processor.py` are the shell.
"""
