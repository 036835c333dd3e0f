"""Network guard of the A2D smoke test: on PYTHONPATH, Python imports this at start-up (as
``sitecustomize``) in every process of the run (Snakemake and each stage it starts), and from
then on any name lookup or IP connection fails at once with one recognisable line. Local (Unix)
sockets still work. Nothing else imports it."""

import socket

BLOCKED = "network access blocked by the A2D smoke test"
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _guarded(real):
    def connect(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"{BLOCKED}: connect to {address}")
        return real(self, address, *args, **kwargs)
    return connect


def _no_lookup(host, *args, **kwargs):
    raise socket.gaierror(f"{BLOCKED}: name lookup of {host}")


socket.socket.connect = _guarded(_connect)
socket.socket.connect_ex = _guarded(_connect_ex)
socket.getaddrinfo = _no_lookup
