#!/usr/bin/env python3
"""A current ClickHouse for the analytics tests, through its HTTP interface.

Debian's package on these machines is ClickHouse 18.16, and the analytics SQL must also run on
current releases, whose parser, analyzer and settings differ. No current server can be installed
here, but chDB (PyPI) embeds a current ClickHouse engine (chDB 4.4: ClickHouse 26.9). This script
serves that engine over the subset of ClickHouse's HTTP interface that the `clickhouse` crate
uses, so the same Rust tests run unchanged against it:

- `POST /?database=D&default_format=F&<settings>` with the SQL in the body: the query runs in
  database D (after `USE D`), with the settings applied for that query only, and its output in
  format F (RowBinary for the crate's reads) is the response body.
- `POST /?database=D&query=INSERT INTO t(cols) FORMAT RowBinary[&decompress=1]` with the rows in
  the body (ClickHouse's LZ4 block framing when `decompress=1`): the rows are inserted through
  the `format()` table function, so materialized views fire as on a server.
- Errors: HTTP 500 with ClickHouse's own exception text, as a server sends it.
- `GET /ping`: `Ok.`

It does no authentication, no HTTP compression of responses (the crate accepts plain bodies),
and serialises requests (one engine session). Test support only.

    python3 tests/support/clickhouse_current.py --port 0 --path /tmp/chdb-data
    # prints "listening on http://127.0.0.1:PORT (ClickHouse 26.9.2.1)" and serves until killed
"""

import argparse
import re
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import lz4.block
from chdb import session

# Parameters of the crate's requests that are not ClickHouse settings.
NOT_SETTINGS = {"database", "default_format", "query", "decompress", "compress", "user", "password"}
INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(?P<table>[`\w.]+)\s*\((?P<columns>[^)]*)\)\s*FORMAT\s+RowBinary\s*$", re.I | re.S)


def decompress_blocks(body: bytes) -> bytes:
    """ClickHouse's compressed framing: [16-byte checksum][method][compressed size incl. the
    9-byte header][decompressed size][data], repeated. The checksum is not verified: this is a
    loopback test server and the engine checks what it parses."""
    out = bytearray()
    at = 0
    while at < len(body):
        method = body[at + 16]
        compressed, decompressed = struct.unpack_from("<II", body, at + 17)
        data = body[at + 25 : at + 16 + compressed]
        if method == 0x82:
            out += lz4.block.decompress(data, uncompressed_size=decompressed)
        elif method == 0x02:
            out += data
        else:
            raise ValueError(f"unsupported compression method 0x{method:02x}")
        at += 16 + compressed
    return bytes(out)


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    def __init__(self, path: str):
        self.session = session.Session(path)
        self.lock = threading.Lock()

    def run(self, sql: str, fmt: str) -> bytes:
        result = self.session.query(sql, fmt)
        return bytes(result.bytes()) if result is not None else b""

    def request(self, params: dict, body: bytes) -> bytes:
        settings = {k: v for k, v in params.items() if k not in NOT_SETTINGS}
        with self.lock:
            self.run(f"USE {params.get('database', 'default')}", "TabSeparated")
            for name, value in settings.items():
                self.run(f"SET {name} = {quote(value)}", "TabSeparated")
            try:
                if "query" in params:
                    return self.insert(params, body)
                return self.run(body.decode(), params.get("default_format", "TabSeparated"))
            finally:
                for name in settings:
                    self.run(f"SET {name} = DEFAULT", "TabSeparated")

    def insert(self, params: dict, body: bytes) -> bytes:
        match = INSERT.match(params["query"])
        if not match:
            raise ValueError(f"only INSERT INTO t(cols) FORMAT RowBinary is served, not {params['query']!r}")
        if params.get("decompress") == "1":
            body = decompress_blocks(body)
        table = match["table"].replace("`", "")
        columns = [c.strip().strip("`") for c in match["columns"].split(",")]
        types = dict(
            line.split("\t")[:2]
            for line in self.run(f"DESCRIBE TABLE {table}", "TabSeparatedRaw").decode().splitlines()
        )
        structure = ", ".join(f"`{c}` {types[c]}" for c in columns)
        data = "".join(f"\\x{b:02x}" for b in body)
        names = ", ".join(f"`{c}`" for c in columns)
        self.run(
            f"INSERT INTO {table} ({names}) SELECT * FROM format(RowBinary, {quote(structure)}, '{data}')",
            "TabSeparated",
        )
        return b""


def handler(engine: Engine):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status: int, body: bytes, extra=()):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def read_body(self) -> bytes:
            # Inserts stream their rows with chunked transfer encoding.
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                body = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(body)
                    body += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))

        def do_GET(self):
            if urlsplit(self.path).path in ("/ping", "/"):
                self.answer(200, b"Ok.\n")
            else:
                self.answer(404, b"not found\n")

        def do_POST(self):
            params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            body = self.read_body()
            try:
                out = engine.request(params, body)
            except Exception as e:  # the engine's own message, as a server would send it
                text = str(e)
                code = re.match(r"Code: (\d+)", text)
                self.answer(500, (text + "\n").encode(), [("X-ClickHouse-Exception-Code", code[1] if code else "0")])
                return
            self.answer(200, out)

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", required=True, help="the engine's data directory")
    args = parser.parse_args()
    engine = Engine(args.path)
    version = engine.run("SELECT version()", "TabSeparated").decode().strip()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(engine))
    print(f"listening on http://127.0.0.1:{server.server_address[1]} (ClickHouse {version})", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
