# A Prompt Streams worker image: `docker compose up` runs it against the compose file's Kafka.
# The first stage builds the wheel (schemas, instrument files, ts_xml and static pages inside it); the image
# installs that wheel, as an observatory would, not the source tree.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams streams
COPY topology topology
COPY connectors connectors
COPY stack stack
COPY schemas schemas
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PROMPT_STREAMS_HOME=/data
WORKDIR /data
CMD ["faust", "-A", "streams.app", "worker", "-l", "info"]
