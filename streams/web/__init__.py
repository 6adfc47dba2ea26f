"""The workers' web endpoints: one module per concern, each with a `register(app, context)`."""
