"""A raw NATS protocol client for tests: reads INFO, signs the nkey nonce,
and exposes the lines and messages the server sends, so tests can assert
the exact bytes (tests/compat drives the real NATS client libraries)."""
import json
import socket

import ubsign


class Client:
    """A raw NATS connection: reads INFO, signs the nonce, sends CONNECT."""

    def __init__(self, node, ident=None, connect=True, timeout=10, **opts):
        self.s = socket.create_connection(("127.0.0.1", node.bus_port), timeout=timeout)
        self.f = self.s.makefile("rb")
        line = self.f.readline()
        assert line.startswith(b"INFO "), line
        self.info = json.loads(line[5:])
        if connect:
            self.connect(ident, **opts)
            first = self.line()
            if opts.get("verbose"):
                assert first == "+OK\r\n", first
                first = self.line()
            assert first == "PONG\r\n", first

    def connect(self, ident, sig=None, **opts):
        body = {"verbose": False, "pedantic": False, "protocol": 1,
                "headers": True, "no_responders": True}
        body.update(opts)
        if ident is not None:
            body["nkey"] = ident.pub
            body["sig"] = sig or ubsign.b64url(ident.key.sign(self.info["nonce"].encode()))
        self.send("CONNECT %s\r\nPING\r\n" % json.dumps(body))

    def send(self, data):
        self.s.sendall(data.encode() if isinstance(data, str) else data)

    def line(self):
        return self.f.readline().decode()

    def expect(self, want):
        got = self.line()
        assert got == want, "expected %r, got %r" % (want, got)

    def msg(self):
        """Reads one MSG/HMSG: (subject, sid, reply, headers, payload)."""
        head = self.line().split()
        assert head and head[0] in ("MSG", "HMSG"), head
        if head[0] == "MSG":
            subj, sid = head[1], head[2]
            reply = head[3] if len(head) == 5 else None
            n, hl = int(head[-1]), 0
        else:
            subj, sid = head[1], head[2]
            reply = head[3] if len(head) == 6 else None
            hl, n = int(head[-2]), int(head[-1])
        data = self.f.read(n + 2)
        return subj, sid, reply, data[:hl], data[hl:n]

    def ping(self):
        """Round trip: everything sent before it was processed."""
        self.send("PING\r\n")
        lines = []
        while True:
            got = self.line()
            if got == "PONG\r\n":
                return lines
            assert got, "connection closed while waiting for PONG"
            lines.append(got)

    def closed(self, timeout=3):
        """Reads until EOF; returns what came before it."""
        self.s.settimeout(timeout)
        rest = b""
        while True:
            chunk = self.s.recv(65536)
            if not chunk:
                return rest
            rest += chunk

    def close(self):
        self.s.close()
