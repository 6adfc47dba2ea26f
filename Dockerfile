# A Prompt Streams worker image: `docker compose up` runs it against the compose file's Kafka.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams streams
COPY topology topology
COPY connectors connectors
COPY stack stack
COPY schemas schemas
RUN pip install --no-cache-dir -e .
ENV PROMPT_STREAMS_DATA_DIR=/data
CMD ["faust", "-A", "streams.app", "worker", "-l", "info"]
