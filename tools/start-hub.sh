#!/usr/bin/env bash
# A hub-compatible server on loopback: olah (a self-hosted Hugging Face mirror) serving the
# repositories tools/hub_mirror.py builds from the embedded assets under their real hub ids.
# Used by the hub tests (tests/test_hub.py) and .ci/run; anyone can use it to try the hub path
# without the internet (docs/cluster.md, "Behind a mirror"). Needs python3.11.
#   bash tools/start-hub.sh --install
#       olah in its own environment only (its pins differ from the project's)
#   PYTHON=.venv/bin/python bash tools/start-hub.sh DIR [--mirrors PATH] [--deny REPO]...
#       builds DIR/mirrors with $PYTHON (an environment with the project installed) unless
#       --mirrors names built ones, serves them on a free 127.0.0.1 port and prints the endpoint
#       (also in DIR/endpoint; requests are logged to DIR/olah.log). --deny org/name refuses
#       a repository as the hub refuses a gated one to a client without a token.
# Idempotent: a server of DIR already running with the same settings is left as it is.
# Exits 3 when olah cannot be installed.
set -euo pipefail

log() { echo "start-hub: $*" >&2; }
OLAH_VERSION=0.5.4
OLAH_ENV=${LORA_TSD_OLAH_ENV:-$HOME/.cache/lora-tsd-bench/olah-$OLAH_VERSION}
PYTHON=${PYTHON:-python3}
case "$PYTHON" in */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac  # absolute
here=$(cd "$(dirname "$0")" && pwd)

install_olah() {
  [ -x "$OLAH_ENV/bin/olah-cli" ] && return 0
  command -v python3.11 >/dev/null || { log "python3.11 is missing (olah's environment needs it)"; exit 3; }
  log "installing olah==$OLAH_VERSION into $OLAH_ENV"
  mkdir -p "$(dirname "$OLAH_ENV")"
  rm -rf "$OLAH_ENV"
  if ! { python3.11 -m venv "$OLAH_ENV" && "$OLAH_ENV/bin/pip" install -q --disable-pip-version-check \
      "olah==$OLAH_VERSION"; } >"$OLAH_ENV.log" 2>&1 || [ ! -x "$OLAH_ENV/bin/olah-cli" ]; then
    log "pip could not install olah==$OLAH_VERSION (no package index reachable?): $(tail -3 "$OLAH_ENV.log")"
    rm -rf "$OLAH_ENV"; exit 3
  fi
}

install_olah
[ "${1:-}" = "--install" ] && exit 0
usage="usage: start-hub.sh --install | start-hub.sh DIR [--mirrors PATH] [--deny org/name]..."
[ $# -ge 1 ] || { log "$usage"; exit 2; }
dir=$(mkdir -p "$1" && cd "$1" && pwd); shift
mirrors="" deny=()
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { log "$1 needs a value; $usage"; exit 2; }
  case "$1" in
    --mirrors) [ -d "$2" ] || { log "--mirrors $2 is not a folder"; exit 2; }; mirrors=$(cd "$2" && pwd) ;;
    --deny) deny+=("$2") ;;
    *) log "unknown argument $1; $usage"; exit 2 ;;
  esac
  shift 2
done

answers() {  # the server of $1 lists a repository's revision (olah's python: no curl needed)
  "$OLAH_ENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \
    "$1/api/models/sentence-transformers/all-MiniLM-L6-v2/revision/main" 2>/dev/null
}
running() { [ -s "$dir/olah.pid" ] && kill -0 "$(cat "$dir/olah.pid")" 2>/dev/null; }
stop() {  # the server of DIR, and wait until it has exited (it shuts down gracefully)
  if running; then
    local pid; pid=$(cat "$dir/olah.pid")
    kill -- -"$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  rm -f "$dir/olah.pid" "$dir/endpoint"
}

config() {  # olah.toml for port $1; olah applies the last matching rule, so denials come last
  echo '[basic]'
  echo 'host = "127.0.0.1"'
  echo "port = $1"
  echo "repos-path = \"$dir/cache\""
  echo "mirrors-path = [\"$mirrors\"]"
  echo '[accessibility]'
  echo 'offline = true'
  echo 'proxy = ['
  echo '  {repo = "*", allow = true}, {repo = "*/*", allow = true},'
  for repo in ${deny[@]+"${deny[@]}"}; do echo "  {repo = \"$repo\", allow = false},"; done
  echo ']'
}

build=""
[ -n "$mirrors" ] || { mirrors="$dir/mirrors"; build=1; }
if running && [ -s "$dir/endpoint" ] && answers "$(cat "$dir/endpoint")" \
    && [ "$(config "$(sed -n 's/^port = //p' "$dir/olah.toml")")" = "$(cat "$dir/olah.toml")" ]; then
  log "already running"; cat "$dir/endpoint"; exit 0
fi
stop

if [ -n "$build" ]; then
  (cd / && "$PYTHON" -c "import lora_tsd") 2>/dev/null \
    || { log "$PYTHON has no lora_tsd: set PYTHON to the project's environment"; exit 2; }
  log "building the mirror repositories in $mirrors (log: $dir/build.log)"
  "$PYTHON" "$here/hub_mirror.py" "$mirrors" >"$dir/build.log" 2>&1 \
    || { log "the mirror build failed: $(tail -5 "$dir/build.log")"; exit 1; }
fi

trap 'stop' ERR
cd "$dir"
for attempt in 1 2 3; do  # a free port can be taken before olah binds it: try another
  port=$("$OLAH_ENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  config "$port" >"$dir/olah.toml"
  setsid "$OLAH_ENV/bin/olah-cli" -c "$dir/olah.toml" --log-path "$dir/logs" >"$dir/olah.log" 2>&1 </dev/null &
  echo $! >"$dir/olah.pid"
  for _ in $(seq 60); do
    if ! running; then break; fi
    if answers "http://127.0.0.1:$port" && grep -q "all-MiniLM-L6-v2/revision/main" "$dir/olah.log"; then
      echo "http://127.0.0.1:$port" | tee "$dir/endpoint"; exit 0
    fi
    sleep 1
  done
  log "attempt $attempt: olah did not answer on port $port: $(tail -3 "$dir/olah.log")"
  stop
done
exit 1
