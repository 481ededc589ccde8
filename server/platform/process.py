"""Process plumbing every role shares: free loopback ports, the parent-death signal, the frozen
start-up heap."""

from __future__ import annotations

import ctypes
import gc
import signal
import socket


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def freeze_heap() -> None:
    """Takes what the process has built so far (modules, descriptors, pools: it lives as long as
    the process) out of garbage collection, so full collections scan only what came after.
    Reference counting still frees those objects; only cycles among them would never be
    collected, a once-only cost bounded by the start-up heap. Called by the gRPC servers and the
    projector once they are set up."""
    gc.collect()
    gc.freeze()


# Looked up once, here: between fork and exec a child of a process with other threads must not
# load a library (the loader's lock may have been held by a thread that does not exist there).
_prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when its parent dies, even by kill -9."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
