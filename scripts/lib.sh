# Helpers the scripts source: free loopback ports, waiting for a port to accept
# connections, stopping the processes a script started, and cargo builds.

# A free loopback TCP port (the OS picks it; the socket is closed at once).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits (up to 10 s) until 127.0.0.1:PORT accepts a TCP connection; WHAT names the
# server in the error. A server's port gives no event to await, so connects repeat.
wait_port() {
  local port=$1 what=${2:-"the server"} i
  for i in $(seq 1 200); do
    if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.2).close()' "$port" 2>/dev/null; then
      return 0
    fi
    sleep 0.05
  done
  echo "$what did not start on port $port" >&2
  return 1
}

# Starts a throwaway nats-server ($nats_bin) on a free loopback port, its log in
# DIR/nats.log, and waits for it; sets port, url and nats_pid.
start_throwaway_nats() {
  port=$(free_port)
  url="nats://127.0.0.1:$port"
  "$nats_bin" -a 127.0.0.1 -p "$port" >"$1/nats.log" 2>&1 &
  nats_pid=$!
  wait_port "$port" nats-server
}

# Runs the function CLEANUP when the script exits, and exits on INT and TERM with the
# usual codes (so CLEANUP runs then too).
on_exit() {
  trap "$1" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# Stops a process this script started, by pid, and reaps it.
stop_pid() {
  local pid=$1
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}

# Cargo's target directory ($CARGO_TARGET_DIR, or the workspace's target/).
cargo_target_dir() {
  cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}

# `cargo build ARGS...`: with cargo's own progress when stderr is a terminal, quiet
# otherwise (CI, logs). A quiet build first says so when another cargo holds the build
# directory's lock, since it waits for it and would otherwise look hung (a terminal
# shows cargo's own "Blocking waiting for file lock").
cargo_build() {
  if [ -t 2 ]; then
    cargo build "$@"
    return
  fi
  local profile=debug prev="" arg lock
  for arg in "$@"; do
    [ "$prev" = --profile ] && profile=$arg
    case $arg in
      --release) profile=release ;;
      --profile=*) profile=${arg#--profile=} ;;
    esac
    prev=$arg
  done
  [ "$profile" = dev ] && profile=debug
  lock="$(cargo_target_dir)/$profile/.cargo-lock"
  if [ -e "$lock" ] && command -v flock >/dev/null 2>&1 && ! flock -n "$lock" true 2>/dev/null; then
    echo "waiting for another cargo command to finish with $lock (the build lock)..." >&2
  fi
  cargo build --quiet "$@"
}

# Builds connres and the load generator (release) and sets target_dir, connres_bin and
# bench_bin.
release_bins() {
  echo "building connres and the load generator (release)..." >&2
  cargo_build --release --bin connres --example bench
  target_dir=$(cargo_target_dir)
  connres_bin="$target_dir/release/connres"
  bench_bin="$target_dir/release/examples/bench"
}

# After a failure: the last lines of every log in DIR, on stderr.
tail_logs() {
  local f
  for f in "$1"/*.log; do [ -s "$f" ] && { echo "--- $f ---" >&2; tail -20 "$f" >&2; }; done
  return 0
}
