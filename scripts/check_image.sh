#!/usr/bin/env bash
# Build the image from the unchanged Dockerfile with podman (no Docker daemon or registry needed),
# start it with host networking on a free loopback port, check readiness, a chat answer, an
# embedding, the user and the read-only code, then stop and remove the container.
#
#   scripts/check_image.sh            # as root on Debian 12 / Ubuntu; output: docs/deployment.md
#
# The base image `python:3.11-slim` is made locally from a Debian bookworm root file system
# (debootstrap) when it is not in podman's storage, and pip inside the build uses this machine's
# pip configuration (its indexes, wheel folders and CA bundle are mounted read-only, not baked in).
# llama-cpp-python comes from this machine's pip (the wheel setup.sh built), unless AICORE_IMAGE_COMPILE=1:
# then the build compiles llama.cpp inside the image, as a user's first build does (about 4 more minutes on 2 cores).
# Environment: AICORE_IMAGE_WORK (default /var/tmp/aicore-image): root file system and podman
# storage; IMAGE (default localhost/ai-core:check); BUILD_ARGS (extra `podman build` arguments);
# READY_TIMEOUT_S (default 900); KEEP_IMAGE=0 removes the image afterwards; BENCH=0 skips the
# decode-speed comparison of the image's portable llama.cpp with this checkout's .venv build.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK="${AICORE_IMAGE_WORK:-/var/tmp/aicore-image}"
IMAGE="${IMAGE:-localhost/ai-core:check}"
BASE="docker.io/library/python:3.11-slim"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-900}"
KEY="check-image-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
say() { printf '[check_image %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# 1. Tools (Debian's podman; runc because crun fails on a cgroups v1+v2 hybrid).
# catatonit is podman's `--init` (Compose's `init: true`).
# runc is named: --no-install-recommends brings crun only, and containers.conf below asks for runc.
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null \
   || [ ! -x /usr/libexec/podman/catatonit ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc buildah \
    debootstrap fuse-overlayfs slirp4netns uidmap containernetworking-plugins iptables catatonit >/dev/null
fi
mkdir -p "$WORK/storage"
cat > "$WORK/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
cat > "$WORK/containers.conf" <<'EOF'
[engine]
runtime = "runc"
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
EOF
export CONTAINERS_STORAGE_CONF="$WORK/storage.conf" CONTAINERS_CONF="$WORK/containers.conf"
# vfs keeps a full copy of the file system per layer (~5 GB per build here): the untagged images of
# earlier builds' stages go first, or repeated checks fill the disk.
podman image prune -f >/dev/null

# 2. The base image, from a Debian root file system when it is not there yet.
if ! podman image exists "$BASE"; then
  rootfs="$WORK/rootfs"
  if [ ! -x "$rootfs/usr/bin/python3" ]; then
    mirror="$(grep -hoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
      | awk '{print $2}' | grep -v security | head -1 || true)"  # no sources.list (deb822 only): grep exits 2
    say "debootstrap bookworm from ${mirror:-http://deb.debian.org/debian}"
    rm -rf "$rootfs"
    as_root debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log"
  fi
  # apt inside the image uses this machine's sources and settings.
  rm -f "$rootfs/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/*.sources "$rootfs/etc/apt/sources.list.d/" 2>/dev/null || cp /etc/apt/sources.list "$rootfs/etc/apt/"
  cp /etc/apt/apt.conf.d/* "$rootfs/etc/apt/apt.conf.d/" 2>/dev/null || true
  say "importing $BASE"
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' - "$BASE" >/dev/null
fi

# 3. pip's configuration for the build: one merged pip.conf plus every local path it names.
# llama-cpp-python comes from this machine: the wheel scripts/setup.sh built (and pip cached) with
# the Dockerfile's portable CMAKE_ARGS, offered to the build as a wheel folder, so llama.cpp is not
# compiled a second time here (about 4 minutes of both cores). AICORE_IMAGE_COMPILE=1 leaves it out:
# the build then compiles llama.cpp itself, as a user's first `docker build` does.
wheels="$WORK/wheels"
rm -rf "$wheels" && mkdir -p "$wheels"
if [ "${AICORE_IMAGE_COMPILE:-0}" != 1 ]; then
  llama="$(grep -oE '"llama-cpp-python==[^"]+"' pyproject.toml | tr -d '"')"
  pip_python=python3; [ -x .venv/bin/python ] && pip_python=.venv/bin/python
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "$pip_python" -m pip wheel -q --no-deps "$llama" -w "$wheels" 2>"$WORK/wheel.log" \
    || { cat "$WORK/wheel.log"; exit 1; }
  say "llama-cpp-python for the build: $(ls "$wheels")"
fi
python3 - "$WORK/pip.conf" "$WORK/pip-mounts" "$wheels" <<'EOF'
import os, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
values = {}
for line in out.splitlines():
    name, _, value = line.partition("=")
    values[name.split(".", 1)[1].replace("_", "-")] = value.strip().strip("'\"")
mounts = set()
for value in values.values():
    for token in value.split():
        path = token[len("file://"):] if token.startswith("file://") else token
        if path.rstrip("/").endswith("/simple"):  # a local index links to files beside it
            path = os.path.dirname(path.rstrip("/"))
        if path.startswith("/") and os.path.exists(path):
            mounts.add(path)
if os.listdir(sys.argv[3]):  # the machine's llama-cpp-python wheel, found before any index
    values["find-links"] = f"{sys.argv[3]} {values.get('find-links', '')}".strip()
    mounts.add(sys.argv[3])
open(sys.argv[1], "w").write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
open(sys.argv[2], "w").write("".join(f"{m}\n" for m in sorted(mounts)))
EOF
volumes=(-v "$WORK/pip.conf:/etc/pip.conf:ro")
while read -r path; do volumes+=(-v "$path:$path:ro"); done < "$WORK/pip-mounts"

say "building $IMAGE from the Dockerfile (${BUILD_ARGS:-default build arguments})"
started=$(date +%s)
# shellcheck disable=SC2086
podman build --pull=never --network host "${volumes[@]}" ${BUILD_ARGS:-} -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log"; df -h "$WORK"; exit 1; }
say "built in $(( $(date +%s) - started )) s; image size $(podman image inspect "$IMAGE" --format '{{.Size}}' \
  | awk '{printf "%.2f GB", $1/1e9}')"

# 4. Run it with host networking on a free port (loopback only: Ray's ports stay private too).
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
name="aicore-check-$$"
cleanup() {
  podman logs "$name" >"$WORK/run.log" 2>&1 || true
  podman stop -t 60 "$name" >/dev/null 2>&1 || true
  podman rm -f "$name" >/dev/null 2>&1 || true
  if [ "${KEEP_IMAGE:-1}" = 0 ]; then podman rmi -f "$IMAGE" >/dev/null 2>&1 || true; fi
  podman image prune -f >/dev/null 2>&1 || true  # the build stage's layers
}
trap cleanup EXIT
started=$(date +%s)
podman run -d --name "$name" --network host --init --shm-size 2g \
  -e API_KEYS="$KEY" -e API_HOST=127.0.0.1 -e API_PORT="$port" "$IMAGE" >/dev/null
say "started $name on 127.0.0.1:$port; waiting for /api/v1/health/ready"
base="http://127.0.0.1:$port"
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/api/v1/health/ready")" = 200 ]; do
  if [ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
    podman logs "$name" 2>&1 | tail -40; say "FAIL: the container stopped"; exit 1
  fi
  if (( $(date +%s) - started > READY_TIMEOUT_S )); then
    podman logs "$name" 2>&1 | tail -40; say "FAIL: not ready in ${READY_TIMEOUT_S}s"; exit 1
  fi
  sleep 3
done
say "ready: 200 after $(( $(date +%s) - started )) s (the default model); waiting for every model"
until python3 -c 'import json, sys; s = json.loads(sys.argv[1])["models"]; sys.exit(any(v in ("loading", "unknown") for v in s.values()))' \
    "$(curl -s "$base/api/v1/health")" 2>/dev/null; do
  if (( $(date +%s) - started > READY_TIMEOUT_S )); then say "FAIL: models still loading after ${READY_TIMEOUT_S}s"; exit 1; fi
  sleep 2
done
say "every model settled after $(( $(date +%s) - started )) s"

# 5. What it serves: the image's models.json, a chat answer, an embedding, its user, its code.
check() { python3 -c "$1" "$2"; }
models="$(curl -s "$base/v1/models" -H "X-API-Key: $KEY")"
check 'import json, sys; ids = sorted(m["id"] for m in json.loads(sys.argv[1])["data"]); print("models:", ", ".join(ids))' "$models"
states="$(curl -s "$base/api/v1/health")"
check 'import json, sys; s = json.loads(sys.argv[1])["models"]; print("states:", s); sys.exit(any(v != "ready" for v in s.values()))' "$states" \
  || { say "FAIL: a model of the image's models.json is not ready"; exit 1; }
chat="$(curl -s "$base/v1/chat/completions" -H "X-API-Key: $KEY" -H 'content-type: application/json' \
  -d '{"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 24, "temperature": 0}')"
check 'import json, sys; r = json.loads(sys.argv[1]); t = r["choices"][0]["message"]["content"]; print("chat:", repr(t), r["usage"]); sys.exit(not t.strip())' "$chat" \
  || { say "FAIL: no chat answer: $chat"; exit 1; }
embedding="$(curl -s "$base/v1/embeddings" -H "X-API-Key: $KEY" -H 'content-type: application/json' \
  -d '{"input": ["The cat sat on the mat."]}')"
check 'import json, sys; r = json.loads(sys.argv[1]); v = r["data"][0]["embedding"]; print("embedding:", r["model"], len(v), "dimensions"); sys.exit(len(v) < 8)' "$embedding" \
  || { say "FAIL: no embedding: $embedding"; exit 1; }
user="$(podman exec "$name" id -u)"
[ "$user" != 0 ] || { say "FAIL: the server runs as root"; exit 1; }
if podman exec "$name" sh -c 'touch /app/serve_app/x || touch /app/.venv/x' 2>/dev/null; then
  say "FAIL: the code is writable by the server's user"; exit 1
fi
echo "user: uid $user; /app/serve_app and /app/.venv not writable; /app/models writable: $(podman exec "$name" sh -c 'test -w /app/models && echo yes || echo no')"
say "OK: $IMAGE serves its models.json (ready, chat, embedding) as a non-root user with read-only code"

# 6. The Compose health check's restart: failing checks (a dead URL here) stop the container's init.
started=$(date +%s)
podman exec "$name" python -m scripts.healthcheck --url http://127.0.0.1:9/ --restart-after 1 >/dev/null 2>&1 || true
until [ "$(podman inspect -f '{{.State.Running}}' "$name")" != true ]; do
  if (( $(date +%s) - started > 120 )); then say "FAIL: the health check did not stop the container"; exit 1; fi
  sleep 1
done
say "health check: after failed checks the container exited in $(( $(date +%s) - started )) s (code $(podman inspect -f '{{.State.ExitCode}}' "$name")): Compose's restart policy starts it again"

# 7. Decode speed: the image's portable llama.cpp (GGML_NATIVE=OFF) against this checkout's .venv
#    build (native by default), alternated, with the server stopped so nothing else runs.
if [ "${BENCH:-1}" = 1 ]; then
  for round in 1 2; do
    if [ -x .venv/bin/python ]; then
      HF_HUB_OFFLINE=1 .venv/bin/python -m scripts.decode_speed --label "this machine's .venv (round $round)"
    fi
    podman run --rm --network none "$IMAGE" python -m scripts.decode_speed --label "image (round $round)"
  done
fi
