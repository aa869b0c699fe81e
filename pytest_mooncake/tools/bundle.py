"""Wheelhouse bundles for air-gapped GPU hosts.

On a connected machine, ``pytest-mooncake bundle`` downloads the wheels a target host needs
(its Python version, the torch it already has), drops what the host already provides,
and packs the rest into parts of a maximum size with a manifest of sha256 sums. On the
host, ``scripts/qualify-offline.sh`` checks, unpacks and installs the parts and runs the
qualification with one command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pytest_mooncake.config.parsing import parse_size
from pytest_mooncake.errors import USAGE_ERROR

# Versions that worked together on an offline H100 with torch 2.11 (docs: gpu facts):
# vLLM 0.27+ pin newer torch; lmcache 0.5.4+ are built against 2.13; xgrammar 0.2.8 needs
# an apache-tvm-ffi newer than vLLM 0.26 pins.
STACKS: dict[str, dict[str, str]] = {
    "2.11.0": {
        "vllm": "0.26.0",
        "lmcache": "0.5.3",
        "mooncake-transfer-engine-cuda13": "0.3.14",
        "xgrammar": "0.2.6",
    },
}
# Dropped from the bundle: what the target already has (torch and its CUDA runtime) and
# what none of the qualification paths import. Names are normalised (lower case, dashes).
DROPPED = re.compile(
    r"^(torch|triton|nvidia-.*|torchvision|torchaudio|torchcodec"
    r"|flashinfer.*|mistral-common|lm-format-enforcer|compressed-tensors|mcp|outlines-core)$"
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


@dataclass(frozen=True)
class Part:
    name: str
    size: int
    sha256: str
    wheels: tuple[str, ...]


def stack_for(torch_version: str) -> dict[str, str]:
    if torch_version not in STACKS:
        raise SystemExit(
            f"no known-good stack for torch {torch_version}; known: {', '.join(STACKS)}. "
            "Add one to pytest_mooncake/tools/bundle.py:STACKS after checking it on a host."
        )
    return STACKS[torch_version]


def _target_flags(python_version: str) -> list[str]:
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    return ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp", *platforms]


def resolve(requirements: list[str], python_version: str, scratch: Path) -> list[str]:
    """``name==version`` of everything the requirements pull in, for the target Python.

    pip resolves from the registries' metadata without fetching every wheel, so torch and
    the CUDA runtime it drags in are named here but never downloaded.
    """
    report = scratch / "resolution.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
         "--report", str(report), "--target", str(scratch / "target"), *_target_flags(python_version), *requirements],
        check=True, capture_output=True, text=True,
    )
    installs = json.loads(report.read_text())["install"]
    return [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in installs]


def needed(pins: list[str]) -> tuple[list[str], list[str]]:
    """Split ``name==version`` pins into (to download, dropped)."""
    keep: list[str] = []
    drop: list[str] = []
    for pin in pins:
        name = re.sub(r"[-_.]+", "-", pin.split("==")[0]).lower()
        (drop if DROPPED.match(name) else keep).append(pin)
    return keep, drop


def download_command(pins: list[str], python_version: str, dest: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", *_target_flags(python_version), "-d", str(dest), *pins]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(wheelhouse: Path, out: Path, max_part_size: int) -> list[Part]:
    """Group wheels into uncompressed tar parts no larger than ``max_part_size`` (one big wheel may exceed it)."""
    out.mkdir(parents=True, exist_ok=True)
    groups: list[list[Path]] = []
    size = 0
    for wheel in sorted(wheelhouse.glob("*.whl"), key=lambda p: p.stat().st_size, reverse=True):
        wheel_size = wheel.stat().st_size
        if not groups or size + wheel_size > max_part_size:
            groups.append([])
            size = 0
        groups[-1].append(wheel)
        size += wheel_size
    parts = []
    for index, group in enumerate(groups):
        path = out / f"part-{index:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for wheel in group:
                tar.add(wheel, arcname=wheel.name)
        parts.append(Part(path.name, path.stat().st_size, _sha256(path), tuple(w.name for w in group)))
    return parts


def write_manifest(out: Path, parts: list[Part], meta: dict[str, object]) -> Path:
    manifest = out / "manifest.json"
    manifest.write_text(json.dumps({**meta, "parts": [part.__dict__ for part in parts]}, indent=2) + "\n")
    return manifest


def cli_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest-mooncake bundle", description=__doc__)
    parser.add_argument("--python-version", default="3.12", help="target Python, e.g. 3.12")
    parser.add_argument("--torch", default="2.11.0", help="torch version already on the target")
    parser.add_argument("--out", type=Path, required=True, help="directory for the parts and manifest")
    parser.add_argument("--max-part-size", default="60MiB", help="largest part, e.g. 60MiB")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="pytest-mooncake source tree to include")
    parser.add_argument("--extra", nargs="*", default=[], help="more requirements, e.g. aiperf==1.0")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        print(f"pytest-mooncake bundle: --python-version {args.python_version!r}: expected a CPython 3 version "
              "such as 3.12", file=sys.stderr)
        return USAGE_ERROR
    stack = stack_for(args.torch)
    requirements = [f"{name}=={ver}" for name, ver in stack.items()] + list(args.extra)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            pins = resolve(requirements, args.python_version, Path(scratch))
        except subprocess.CalledProcessError as exc:
            reason = next((line for line in (exc.stderr or "").splitlines() if line.startswith("ERROR:")), "")
            print(f"pytest-mooncake bundle: --python-version {args.python_version}: pip finds no wheels of "
                  f"{' '.join(requirements)} for Python {args.python_version} ({reason.removeprefix('ERROR: ')}); "
                  "give a Python version they ship wheels for, e.g. 3.12", file=sys.stderr)
            return USAGE_ERROR
    keep, dropped = needed(pins)
    wheelhouse = args.out / "wheelhouse"
    created = not wheelhouse.exists()
    wheelhouse.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheelhouse), str(args.project)],
                       check=True)
        subprocess.run(download_command(keep, args.python_version, wheelhouse), check=True)
    except BaseException:
        if created:  # no half-built wheelhouse left behind
            shutil.rmtree(wheelhouse)
        raise
    parts = pack(wheelhouse, args.out, parse_size(args.max_part_size))
    manifest = write_manifest(
        args.out, parts, {"python": args.python_version, "torch": args.torch, "stack": stack, "dropped": dropped}
    )
    total = sum(part.size for part in parts)
    print(f"{len(parts)} parts, {total / 2**20:.1f} MiB, manifest {manifest}; dropped {len(dropped)} wheels the host has")
    return 0
