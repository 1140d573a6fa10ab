FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY qilu qilu
COPY collectors collectors
COPY stream stream
COPY storage storage
COPY api api
COPY dashboards dashboards
COPY interconnect interconnect
COPY ops ops
COPY edge-agent edge-agent
RUN pip install --no-cache-dir ".[server]"
# agents keep their durable buffers here (a volume in docker-compose.yml)
RUN mkdir -p /var/lib/qilu && chown nobody /var/lib/qilu
USER nobody
ENTRYPOINT []
