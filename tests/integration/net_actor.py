"""Makes connects and accepts on loopback from a fresh process; prints what it did as JSON.

A listener, a connect that succeeds, the accept of it (accept4 through Python), a connect
refused (ECONNREFUSED; to the port given as argument, else to one just freed) and a
non-blocking accept with nothing waiting (EAGAIN).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys

out: dict = {"pid": os.getpid()}
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
out["port"] = srv.getsockname()[1]
cli = socket.create_connection(("127.0.0.1", out["port"]))
out["client_port"] = cli.getsockname()[1]
conn, _peer = srv.accept()
if len(sys.argv) > 1:  # a port the caller knows nothing listens on
    out["refused_port"] = int(sys.argv[1])
else:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    out["refused_port"] = closed.getsockname()[1]
    closed.close()
try:
    socket.create_connection(("127.0.0.1", out["refused_port"]))
except OSError as e:
    out["refused"] = e.errno
srv.setblocking(False)
try:
    srv.accept()
except BlockingIOError as e:
    out["eagain"] = e.errno == errno.EAGAIN
print(json.dumps(out))
