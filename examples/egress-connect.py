#!/usr/bin/env python3
"""Open a TCP tunnel through the sandbox's egress proxy: stdin/stdout <-> HOST:PORT.

For tools that take a ProxyCommand, e.g. git over SSH (the sandbox must be allowed github.com:22):
    GIT_SSH_COMMAND='ssh -o ProxyCommand="python3 /workspace/egress-connect.py %h %p"' git clone git@github.com:org/repo.git
"""
import os
import socket
import sys
import threading

proxy = os.environ.get("HTTPS_PROXY", "http://127.0.0.1:3128").rsplit("/", 1)[-1] or "127.0.0.1:3128"
phost, pport = proxy.rsplit(":", 1)
host, port = sys.argv[1], sys.argv[2]
s = socket.create_connection((phost, int(pport)))
s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    b = s.recv(1)
    if not b:
        break
    head += b
status = head.split(b"\r\n", 1)[0].decode(errors="replace")
if " 200 " not in status + " ":
    sys.exit(f"egress-connect: {status}")


def upstream() -> None:
    for chunk in iter(lambda: sys.stdin.buffer.read1(65536), b""):
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)


threading.Thread(target=upstream, daemon=True).start()
for chunk in iter(lambda: s.recv(65536), b""):
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
