# peerd node image: `docker build -t peerd .`, then e.g.
#   docker run --rm -e PEERD_NODE_ID=node-a -e PEERD_ADVERTISE=10.0.0.5:7070 \
#     -e PEERD_ETCD=10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 -p 7070:7070 peerd
# Configuration comes from PEERD_* environment variables (or flags after the image name,
# which replace CMD: `docker run peerd serve --node-id node-a ...`). See docker-compose.yml and
# docs/docker-compose.md for a 3-node cluster on 3 etcd members.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 peerd \
    && useradd --system --uid 10001 --gid peerd --home-dir /home/peerd --create-home \
       --shell /usr/sbin/nologin peerd

# Time-zone rules come from the PyPI tzdata package installed with peerd (the image has no system
# tzdata; hosts that do use the same package by default): docs/scheduling.md, "Time-zone rules".

# In a container the node must listen on all interfaces; set PEERD_ADVERTISE to the address
# other nodes and clients dial (the member key publishes it).
ENV PEERD_LISTEN=0.0.0.0:7070

USER 10001:10001
WORKDIR /home/peerd
EXPOSE 7070 9464

# A node drains for up to 30 s on SIGTERM: give it `docker stop -t 40` / stop_grace_period: 40s.
STOPSIGNAL SIGTERM

# grpc.health.v1 on the node's own port (taken from PEERD_LISTEN), SERVING or unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "peerd.healthcheck", "--timeout", "3"]

ENTRYPOINT ["peerd"]
CMD ["serve"]
