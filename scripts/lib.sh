# Helpers the scripts source: free loopback ports, waiting for a port to accept
# connections, and stopping the processes a script started.

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

# Stops a process this script started, by pid, and reaps it.
stop_pid() {
  local pid=$1
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}

# Builds connres and the load generator (release) and sets target_dir, connres_bin and
# bench_bin.
release_bins() {
  echo "building (release)..." >&2
  cargo build --quiet --release --bin connres --example bench
  target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  connres_bin="$target_dir/release/connres"
  bench_bin="$target_dir/release/examples/bench"
}

# After a failure: the last lines of every log in DIR, on stderr.
tail_logs() {
  local f
  for f in "$1"/*.log; do [ -s "$f" ] && { echo "--- $f ---" >&2; tail -20 "$f" >&2; }; done
  return 0
}
