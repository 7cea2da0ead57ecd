#!/usr/bin/env bash
# A hub-compatible server on loopback: olah (a self-hosted Hugging Face mirror) serving the
# repositories tools/hub_mirror.py builds from the embedded assets under their real hub ids.
# Used by the hub tests (tests/test_hub.py) and .ci/run; anyone can use it to try the hub path
# without the internet (docs/cluster.md, "Behind a mirror").
#   bash tools/start-hub.sh --install
#       olah in its own environment only (its pins differ from the project's)
#   PYTHON=.venv/bin/python bash tools/start-hub.sh DIR [--mirrors PATH] [--deny REPO]...
#       builds DIR/mirrors with $PYTHON (an environment with the project installed) unless
#       --mirrors names built ones, serves them on a free 127.0.0.1 port and prints the endpoint
#       (also in DIR/endpoint; requests are logged to DIR/olah.log). --deny org/name refuses
#       a repository as the hub refuses a gated one to a client without a token.
# Idempotent: a running server of DIR is left as it is. Exits 3 when olah cannot be installed.
set -euo pipefail

log() { echo "start-hub: $*" >&2; }
OLAH_VERSION=0.5.4
OLAH_ENV=${LORA_TSD_OLAH_ENV:-$HOME/.cache/lora-tsd-bench/olah-$OLAH_VERSION}
here=$(cd "$(dirname "$0")" && pwd)

install_olah() {
  [ -x "$OLAH_ENV/bin/olah-cli" ] && return 0
  command -v python3.11 >/dev/null || { log "python3.11 is missing (olah's environment needs it)"; exit 3; }
  log "installing olah==$OLAH_VERSION into $OLAH_ENV"
  rm -rf "$OLAH_ENV"
  if ! { python3.11 -m venv "$OLAH_ENV" && "$OLAH_ENV/bin/pip" install -q --disable-pip-version-check \
      "olah==$OLAH_VERSION"; } >"$OLAH_ENV.log" 2>&1; then
    log "pip could not install olah==$OLAH_VERSION (no package index reachable?): $(tail -3 "$OLAH_ENV.log")"
    rm -rf "$OLAH_ENV"; exit 3
  fi
}

install_olah
[ "${1:-}" = "--install" ] && exit 0
[ $# -ge 1 ] || { log "usage: start-hub.sh --install | start-hub.sh DIR [--mirrors PATH] [--deny REPO]..."; exit 2; }
dir=$(mkdir -p "$1" && cd "$1" && pwd); shift
mirrors="" deny=()
while [ $# -gt 0 ]; do
  case "$1" in
    --mirrors) mirrors=$(cd "$2" && pwd); shift 2 ;;
    --deny) deny+=("$2"); shift 2 ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
done

endpoint_answers() { [ -s "$dir/endpoint" ] && curl -sf -o /dev/null "$(cat "$dir/endpoint")/api/models/$1/revision/main"; }
if [ -s "$dir/olah.pid" ] && kill -0 "$(cat "$dir/olah.pid")" 2>/dev/null \
    && endpoint_answers sentence-transformers/all-MiniLM-L6-v2; then
  log "already running"; cat "$dir/endpoint"; exit 0
fi

if [ -z "$mirrors" ]; then
  mirrors="$dir/mirrors"
  "${PYTHON:-python3}" -c "import lora_tsd" 2>/dev/null \
    || { log "${PYTHON:-python3} has no lora_tsd: set PYTHON to the project's environment"; exit 2; }
  log "building the mirror repositories in $mirrors"
  "${PYTHON:-python3}" "$here/hub_mirror.py" "$mirrors" >"$dir/build.log"
fi

port=$("$OLAH_ENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
{
  echo '[basic]'
  echo 'host = "127.0.0.1"'
  echo "port = $port"
  echo "repos-path = \"$dir/cache\""
  echo "mirrors-path = [\"$mirrors\"]"
  echo '[accessibility]'
  echo 'offline = true  # never try the real hub'
  echo 'proxy = ['
  echo '  {repo = "*", allow = true}, {repo = "*/*", allow = true},'
  # olah applies the last matching rule, so each denial follows the catch-all rules.
  for repo in "${deny[@]}"; do echo "  {repo = \"$repo\", allow = false},"; done
  echo ']'
} >"$dir/olah.toml"

cd "$dir"
setsid "$OLAH_ENV/bin/olah-cli" -c "$dir/olah.toml" --log-path "$dir/logs" >"$dir/olah.log" 2>&1 </dev/null &
echo $! >"$dir/olah.pid"
echo "http://127.0.0.1:$port" >"$dir/endpoint"
for _ in $(seq 60); do
  if endpoint_answers sentence-transformers/all-MiniLM-L6-v2; then cat "$dir/endpoint"; exit 0; fi
  kill -0 "$(cat "$dir/olah.pid")" 2>/dev/null || break
  sleep 1
done
log "olah did not answer on $(cat "$dir/endpoint"): $(tail -5 "$dir/olah.log")"
exit 1
