"""A stand-in for systemd socket activation, for the restart tests.

Usage: socket_supervisor.py HOST PORT -- PROGRAM ARGS...

Binds TCP HOST:PORT (listening) and UDP HOST:PORT once, like a .socket unit,
and runs PROGRAM with them as fds 3 and 4 (LISTEN_FDS=2, LISTEN_PID, and
LISTEN_FDNAMES=https:quic), like the service. SIGUSR1 restarts it the way
`systemctl restart` does: SIGTERM, wait for it to exit, start it again on the
same sockets (which stay open here all along, so clients queue instead of
being refused). SIGTERM/SIGINT stop both. The child dies with this process.
"""

import ctypes
import os
import signal
import socket
import sys


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((host, port))
    tcp.listen(4096)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, port))
    libc = ctypes.CDLL(None, use_errno=True)

    def spawn() -> int:
        pid = os.fork()
        if pid == 0:
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            t, u = os.dup(tcp.fileno()), os.dup(udp.fileno())
            os.dup2(t, 3)
            os.dup2(u, 4)
            env = dict(os.environ, LISTEN_FDS="2", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="https:quic")
            os.execve(argv[0], argv, env)
        return pid

    state = {"child": spawn(), "restart": False, "stop": False}

    def on_usr1(*_):
        state["restart"] = True

    def on_term(*_):
        state["stop"] = True

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print(f"supervisor: started {state['child']}", file=sys.stderr, flush=True)
    while not state["stop"]:
        signal.pause()
        if state["restart"]:
            state["restart"] = False
            os.kill(state["child"], signal.SIGTERM)
            os.waitpid(state["child"], 0)
            state["child"] = spawn()
            print(f"supervisor: restarted as {state['child']}", file=sys.stderr, flush=True)
    os.kill(state["child"], signal.SIGTERM)
    os.waitpid(state["child"], 0)


if __name__ == "__main__":
    main()
