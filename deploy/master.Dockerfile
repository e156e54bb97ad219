# The reference image of the kubetrain master running in its own cluster (`kubetrain k8s manifests`,
# docs/kubernetes.md).
#
# What it holds, and why:
# * kubetrain with the `kubernetes` extra (the engine's client) and the `postgres` extra (psycopg, for
#   `--postgres`), installed from this source tree as a wheel: the image runs exactly the code you have.
# * A non-root user, uid/gid 10001, the uid the Deployment runs as (runAsNonRoot, fsGroup 10001). The
#   master's home (KUBETRAIN_HOME) is on a claim mounted at /var/lib/kubetrain; the root file system stays
#   read-only, /tmp is an emptyDir.
# * `sh`, which the Deployment's init container uses to copy config.yaml from its ConfigMap into the home.
# * No training libraries: jobs run in their own images (deploy/training.Dockerfile).
#
# Build from the repository root (only pyproject.toml, README.md and src/ are copied):
#   docker build -f deploy/master.Dockerfile -t kubetrain-master:0.1.0 .
# then load it into the cluster (kind load docker-image kubetrain-master:0.1.0; k3s: docker save | k3s ctr
# images import -), or push it and pass `kubetrain k8s manifests --image registry.example/kubetrain-master:0.1.0`.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Wheels for kubetrain and every dependency, so the final stage installs offline and keeps no build tools.
RUN pip wheel --wheel-dir /wheels ".[kubernetes,postgres]"

FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    KUBETRAIN_HOME=/var/lib/kubetrain/home
RUN groupadd --gid 10001 kubetrain \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/kubetrain --no-create-home --shell /usr/sbin/nologin kubetrain \
 && mkdir -p /var/lib/kubetrain && chown 10001:10001 /var/lib/kubetrain
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "kubetrain[kubernetes,postgres]"
USER 10001:10001
WORKDIR /var/lib/kubetrain
EXPOSE 8765
# In the foreground; the Deployment sets KUBETRAIN_HOST=0.0.0.0 and KUBETRAIN_TOKEN (from a Secret).
CMD ["kubetrain", "server"]
