#!/usr/bin/env bash
# Starts a throw-away ClickHouse server for the tests: loopback only, a free port, a temporary data
# directory, never the system service. Prints `export VAXCAMP_TEST_CLICKHOUSE=http://127.0.0.1:PORT`
# lines for the caller to eval. `stop DIR` stops it and removes its directory; `halt DIR` kills
# it keeping its data (an outage) and `resume DIR` starts it again on the same ports and data.
#
#   eval "$(bash tests/support/clickhouse.sh start)"
#   ...
#   bash tests/support/clickhouse.sh stop "$VAXCAMP_TEST_CLICKHOUSE_DIR"
set -euo pipefail

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
    local server
    server="$(command -v clickhouse-server || true)"
    [ -n "$server" ] || server="$(command -v clickhouse || true)"
    if [ -z "$server" ]; then
        echo "clickhouse-server is not installed (apt-get install clickhouse-server)" >&2
        exit 1
    fi
    local dir http tcp interserver
    dir="$(mktemp -d /tmp/vaxcamp-clickhouse.XXXXXX)"
    http="$(free_port)"
    tcp="$(free_port)"
    interserver="$(free_port)"
    mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/log"
    cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog><console>0</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$http</http_port>
    <tcp_port>$tcp</tcp_port>
    <interserver_http_port>$interserver</interserver_http_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <timezone>UTC</timezone>
</yandex>
XML
    cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
    echo "$server" >"$dir/server"
    echo "$http" >"$dir/http_port"
    launch "$dir"
    echo "export VAXCAMP_TEST_CLICKHOUSE=http://127.0.0.1:$http"
    echo "export VAXCAMP_TEST_CLICKHOUSE_DIR=$dir"
}

# Starts the server of DIR and waits until it answers.
launch() {
    local dir="$1" server http
    server="$(cat "$dir/server")"
    http="$(cat "$dir/http_port")"
    if [ "$(basename "$server")" = clickhouse ]; then
        "$server" server --config-file="$dir/config.xml" >>"$dir/log/stdout.log" 2>&1 &
    else
        "$server" --config-file="$dir/config.xml" >>"$dir/log/stdout.log" 2>&1 &
    fi
    echo $! >"$dir/pid"
    for _ in $(seq 1 150); do
        if curl -fsS "http://127.0.0.1:$http/ping" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "ClickHouse did not answer on port $http within 30 s; its log:" >&2
    tail -n 30 "$dir/log/stdout.log" "$dir/log/error.log" >&2 || true
    exit 1
}

halt() {
    local dir="$1" pid
    pid="$(cat "$dir/pid")"
    kill -9 "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

stop() {
    local dir="$1"
    [ -f "$dir/pid" ] || return 0
    local pid
    pid="$(cat "$dir/pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:?directory}" ;;
    halt) halt "${2:?directory}" ;;
    resume) launch "${2:?directory}" ;;
    *) echo "usage: $0 start | stop DIR | halt DIR | resume DIR" >&2; exit 2 ;;
esac
