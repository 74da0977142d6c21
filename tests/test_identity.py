"""The hot path (fan-out, metrics, the security middleware) stays free of the moderation
service, which loads argon2 and hashes a password at import."""

from __future__ import annotations

import subprocess
import sys

from .servers import ROOT


def test_the_hot_path_does_not_import_moderation() -> None:
    probe = (
        "import sys, server.fanout, server.metrics, server.security, server.identity, server.control, "
        "server.protocol; print(sorted(m for m in sys.modules if m in ('server.moderation', 'argon2')))"
    )
    imported = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"
