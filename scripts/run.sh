#!/usr/bin/env bash
# `make run`: ragq's local stack under supervisord (scripts/supervisord.conf): broker and cache
# redis-servers unless reachable ones are configured, the Celery worker, gunicorn, Flower, each
# started again if it dies. Prints the URLs once /health/ready answers; Ctrl-C stops everything,
# in order (web first, Redis last).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export RAGQ_RUN_DIR="${RAGQ_RUN_DIR:-$PWD/.run}"
# The web's multiprocess metrics folder is the web's alone: the worker and Flower serve their
# own /metrics, and a worker writing there too would show its series twice to a scraper.
export RAGQ_WEB_METRICS_DIR="${PROMETHEUS_MULTIPROC_DIR:-$RAGQ_RUN_DIR/prometheus-web}"
unset PROMETHEUS_MULTIPROC_DIR
export PYTHONUNBUFFERED=1

# One stack per run folder (its Redis data, its metrics): the lock is held as long as this
# script runs, so a second `make run` from here stops before it touches anything.
mkdir -p "$RAGQ_RUN_DIR"
exec 9>>"$RAGQ_RUN_DIR/lock"
if ! flock --nonblock 9; then
    echo "make run: ragq already runs from $RAGQ_RUN_DIR (pid $(cat "$RAGQ_RUN_DIR/lock")); stop" \
         "it (Ctrl-C in its terminal) or set RAGQ_RUN_DIR and the ports to run another" >&2
    exit 1
fi
echo $$ >"$RAGQ_RUN_DIR/lock"
# Exits 1, naming each port in use and its process, when the stack cannot own its ports.
stack_env="$(python scripts/run_stack.py env)"
eval "$stack_env"
mkdir -p "$RAGQ_RUN_DIR/broker" "$RAGQ_RUN_DIR/cache"

# In the foreground: Ctrl-C reaches supervisord, which stops its programs in order (they run in
# process groups of their own, so the terminal's SIGINT reaches none of them directly).
supervisord --nodaemon --configuration scripts/supervisord.conf
