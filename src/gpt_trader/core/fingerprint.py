"""Content fingerprints: the identity of a data set, and cache keys that change when inputs or params change."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def hash_files(paths: Iterable[str | Path], params: Any = None) -> str:
    """SHA-256 over the files (sorted; name and bytes) and the JSON of `params`; a missing file hashes as missing."""
    digest = hashlib.sha256()
    if params is not None:
        digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        if not path.is_file():
            digest.update(b"\0<missing>")
            continue
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
