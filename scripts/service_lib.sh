# Shared by postgres_server.sh and s3_server.sh (sourced): stop the server in $PID with signal
# $STOP_SIGNAL, wait up to $STOP_TRIES x 0.2 s, then SIGKILL it, and remove $STATE; on exit,
# Ctrl-C or SIGTERM alike.
PID=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill "-$STOP_SIGNAL" "$PID" 2>/dev/null || true
    for _ in $(seq 1 "$STOP_TRIES"); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
