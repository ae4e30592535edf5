# Sourced by .ci/run: starts a throwaway PostgreSQL server on 127.0.0.1 and exports
# MUTRANSFER_TEST_POSTGRES_URL for the multi-worker sweep tests.
PG_PORT="${PG_PORT:-54329}"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
PGDATA="$(mktemp -d /tmp/mutransfer-pg.XXXXXX)"
if [ "$(id -u)" = "0" ]; then
  chown postgres "$PGDATA"
  AS_PG=(runuser -u postgres --)
else
  AS_PG=()
fi
"${AS_PG[@]}" "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
  -o "-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
# stop it when the sourcing script exits, so repeated runs on one machine do not collide
trap '"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true' EXIT
"${AS_PG[@]}" "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres mutransfer_test
export MUTRANSFER_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT/mutransfer_test"
echo "PostgreSQL running: $MUTRANSFER_TEST_POSTGRES_URL"
