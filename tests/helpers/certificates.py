"""Self-signed TLS certificates for the tests that serve over TLS (openssl must be installed)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(cert: Path, key: Path, dns_names: list[str]) -> None:
    """Write a self-signed certificate (its own CA) for ``dns_names`` and 127.0.0.1; the first name is the CN."""
    alt_names = ",".join([f"DNS:{name}" for name in dns_names] + ["IP:127.0.0.1"])
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={dns_names[0]}",
            "-addext",
            f"subjectAltName={alt_names}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
