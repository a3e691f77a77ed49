#!/usr/bin/env bash
# A throwaway PostgreSQL on loopback for the SQL lock backend and cluster tests.
#
#   eval "$(.ci/postgres.sh)"        start (installing Debian's postgresql if missing) and export the URL
#   .ci/postgres.sh start            same; prints `export SESSION_RUNTIME_PG_URL=...` on stdout
#   .ci/postgres.sh stop             stop the server and delete its data directory
#   .ci/postgres.sh url              print the URL the tests use
#
# The server listens on 127.0.0.1 only, on $SESSION_RUNTIME_PG_PORT (default 55432), with trust
# authentication, in a fresh temporary data directory. Durability is turned off (fsync=off): the data is
# thrown away anyway, and the tests run faster. When run as root, initdb and the server run as the
# `postgres` user, because PostgreSQL refuses to run as root. Progress goes to stderr, the export to stdout,
# so `eval "$(.ci/postgres.sh)"` works from any shell.
set -euo pipefail

port="${SESSION_RUNTIME_PG_PORT:-55432}"
database="${SESSION_RUNTIME_PG_DATABASE:-session_runtime}"
state="${TMPDIR:-/tmp}/session-runtime-pg-${port}.datadir"
url="postgres://postgres@127.0.0.1:${port}/${database}"

say() { echo "postgres.sh: $*" >&2; }

find_bindir() {
  local candidate
  # Newest installed major version first.
  for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
    if [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" ]]; then
      echo "$candidate"
      return 0
    fi
  done
  if command -v pg_config >/dev/null 2>&1; then
    candidate="$(pg_config --bindir)"
    if [[ -x "$candidate/initdb" ]]; then
      echo "$candidate"
      return 0
    fi
  fi
  if command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  return 1
}

install_postgres() {
  say "PostgreSQL binaries not found; installing Debian's postgresql package"
  local sudo=""
  if [[ "$(id -u)" != "0" ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo -n"
    else
      say "not root and no sudo: install PostgreSQL yourself (apt-get install postgresql), then rerun"
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq postgresql >&2
}

# Runs a command as the user that owns the server: `postgres` when we are root, ourselves otherwise.
as_owner() {
  if [[ "$(id -u)" == "0" ]]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      su -s /bin/sh postgres -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

ready() {
  "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -U postgres >/dev/null 2>&1
}

start() {
  bindir="$(find_bindir || true)"
  if [[ -z "$bindir" ]]; then
    install_postgres
    bindir="$(find_bindir)"
  fi

  if ready; then
    say "a server already answers on 127.0.0.1:${port}; reusing it"
  else
    if [[ "$(id -u)" == "0" ]] && ! getent passwd postgres >/dev/null; then
      say "running as root but there is no 'postgres' user to run the server as"
      exit 1
    fi
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/session-runtime-pg.XXXXXX")"
    chmod 0700 "$dir"
    if [[ "$(id -u)" == "0" ]]; then chown postgres: "$dir"; fi
    echo "$dir" >"$state"
    say "initdb in $dir"
    as_owner "$bindir/initdb" -D "$dir" --username=postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
    say "starting PostgreSQL on 127.0.0.1:${port}"
    if ! as_owner "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -c port=${port} -c unix_socket_directories=${dir} -c max_connections=300 -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
      start >/dev/null; then
      say "the server did not start; its log:"
      cat "$dir/server.log" >&2 || true
      exit 1
    fi
  fi

  local i
  for i in $(seq 1 60); do
    ready && break
    sleep 0.5
  done
  if ! ready; then
    say "the server on 127.0.0.1:${port} did not become ready"
    exit 1
  fi

  if ! "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '${database}'" | grep -q 1; then
    "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres "$database"
  fi
  say "ready: $url"
  echo "export SESSION_RUNTIME_PG_URL=$url"
}

stop() {
  bindir="$(find_bindir || true)"
  if [[ ! -f "$state" ]]; then
    say "nothing to stop (no $state)"
    return 0
  fi
  local dir
  dir="$(cat "$state")"
  if [[ -n "$bindir" && -d "$dir" ]]; then
    as_owner "$bindir/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf -- "$dir" "$state"
  say "stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  url) echo "$url" ;;
  *)
    say "usage: $0 [start|stop|url]"
    exit 2
    ;;
esac
