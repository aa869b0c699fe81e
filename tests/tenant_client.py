"""Another tenant of a Mooncake cluster: writes keys with known checksums, and later checks them.

Not part of the plugin and not a fake: a plain ``mooncake.store`` client, as any other
application sharing the cluster would run it. The values are random bytes (seeded), not the
plugin's ``value_for``, so the check is independent of the code under test.

    python tests/tenant_client.py write  --master H:P --metadata URL --manifest F --prefix P --count N --size S
    python tests/tenant_client.py verify --master H:P --metadata URL --manifest F

``verify`` prints one JSON line: ``{"exact": n, "missing": [...], "wrong": [...]}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path


def _store(master: str, metadata: str) -> object:
    from mooncake.store import MooncakeDistributedStore

    store = MooncakeDistributedStore()
    # Contributes no memory: the tenant's keys live in the pool owner's segment.
    code = store.setup("127.0.0.1", metadata, 0, 64 << 20, "tcp", "", master)
    if code != 0:
        raise SystemExit(f"tenant: setup() returned {code} (master {master}, metadata {metadata})")
    return store


def write(store: object, manifest: Path, prefix: str, count: int, size: int) -> None:
    checksums = {}
    for index in range(count):
        key = f"{prefix}-{index}"
        value = random.Random(key).randbytes(size)
        code = store.put(key, value)  # type: ignore[attr-defined]
        if code != 0:
            raise SystemExit(f"tenant: put({key}) returned {code}")
        checksums[key] = hashlib.sha256(value).hexdigest()
    manifest.write_text(json.dumps(checksums))


def verify(store: object, manifest: Path) -> dict[str, object]:
    missing, wrong, exact = [], [], 0
    for key, checksum in json.loads(manifest.read_text()).items():
        value = bytes(store.get(key))  # type: ignore[attr-defined]
        if not value:
            missing.append(key)
        elif hashlib.sha256(value).hexdigest() != checksum:
            wrong.append(key)
        else:
            exact += 1
    return {"exact": exact, "missing": missing, "wrong": wrong}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=("write", "verify"))
    parser.add_argument("--master", required=True)
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--prefix", default="tenant")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=256 << 10)
    args = parser.parse_args(argv)
    store = _store(args.master, args.metadata)
    try:
        if args.action == "write":
            write(store, args.manifest, args.prefix, args.count, args.size)
        else:
            print(json.dumps(verify(store, args.manifest)), flush=True)
    finally:
        store.close()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
