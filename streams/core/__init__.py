"""The functional core: pure functions `(state, event, now) -> (new state, outputs)`.

Nothing here touches Kafka, files or the clock; time is always passed in. The agents in
`streams/agents/` and the transactional processors (`streams/sal_intake.py`,
`streams/gather_processor.py`) are the shell.
"""
