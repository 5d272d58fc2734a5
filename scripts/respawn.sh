#!/usr/bin/env bash
# Run "$@" and start it again whenever it exits, as a compose restart policy does. honcho stops
# the whole stack when one process ends; this keeps the Celery worker's line alive instead, so a
# crashed worker comes back and its unacknowledged job (acks_late) is redelivered to it.
set -u
child=0
trap 'kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0' TERM INT
while true; do
    "$@" &
    child=$!
    wait "$child"
    echo "respawn: '$1' exited with status $?; restarting in 1 s" >&2
    sleep 1
done
