"""Regenerate the committed protobuf/gRPC stubs from ``protos/``.

Usage (from the repository root, needs the ``dev`` extra for grpcio-tools)::

    python -m taylorglo_tf.rpc.generate            # rewrite taylorglo_tf/rpc/*_pb2*.py(i)
    python -m taylorglo_tf.rpc.generate --check    # exit 1 if the committed stubs are stale

protoc names the generated modules after the proto package path
(``taylorglo/v1/types.proto`` -> ``from taylorglo.v1 import types_pb2``). The stubs
live flat in :mod:`taylorglo_tf.rpc` instead, so one post-processing step rewrites
those imports to ``from taylorglo_tf.rpc import types_pb2``. The descriptors keep
their canonical file names (``taylorglo/v1/*.proto``), so server reflection shows
clients the same files as ``protos/``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RPC_DIR = Path(__file__).resolve().parent
REPO_ROOT = RPC_DIR.parents[1]
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_PACKAGE_DIR = Path("taylorglo") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

_IMPORT = re.compile(r"^from taylorglo\.v1 import (\w+_pb2)\b", re.MULTILINE)


def _is_generated(name: str) -> bool:
    return name.endswith(GENERATED_SUFFIXES)


def render(proto_root: Path = PROTO_ROOT) -> dict[str, str]:
    """Run protoc on every ``.proto`` under ``proto_root/taylorglo/v1``.

    Returns ``{file name: text}`` of the stubs as they belong in
    ``taylorglo_tf/rpc`` (imports rewritten; no ``*_pb2_grpc.py`` for proto files
    that declare no service).
    """
    import grpc_tools

    protos = sorted((proto_root / PROTO_PACKAGE_DIR).glob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files under {proto_root / PROTO_PACKAGE_DIR}")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        # protoc runs in its own process: its bundled protobuf/absl clash with
        # TensorFlow's when both are loaded in one process (a segfault).
        args = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(proto_root)) for p in protos),
        ]
        completed = subprocess.run(args, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"protoc failed ({' '.join(args)}): {completed.stderr.strip()}")
        out: dict[str, str] = {}
        for path in sorted((Path(tmp) / PROTO_PACKAGE_DIR).iterdir()):
            text = path.read_text()
            if path.name.endswith("_pb2_grpc.py") and "class " not in text:
                continue  # no service in this proto file: the module would be empty
            out[path.name] = _IMPORT.sub(r"from taylorglo_tf.rpc import \1", text)
    return out


def stale_files(rendered: dict[str, str], rpc_dir: Path = RPC_DIR) -> list[str]:
    """Names of stubs that differ from ``rendered``, are missing, or are left over."""
    existing = {p.name for p in rpc_dir.iterdir() if _is_generated(p.name)}
    stale = [n for n, t in rendered.items() if n not in existing or (rpc_dir / n).read_text() != t]
    stale += sorted(existing - set(rendered))
    return sorted(stale)


def write(rendered: dict[str, str], rpc_dir: Path = RPC_DIR) -> None:
    """Write ``rendered`` into ``rpc_dir`` and delete stubs no longer generated."""
    for path in rpc_dir.iterdir():
        if _is_generated(path.name) and path.name not in rendered:
            path.unlink()
    for name, text in rendered.items():
        (rpc_dir / name).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protos", type=Path, default=PROTO_ROOT, help="proto root (default: repo protos/)")
    parser.add_argument("--check", action="store_true", help="only report stale stubs; exit 1 if any")
    args = parser.parse_args(argv)
    rendered = render(args.protos)
    if args.check:
        stale = stale_files(rendered)
        for name in stale:
            print(f"stale: taylorglo_tf/rpc/{name}", file=sys.stderr)
        return 1 if stale else 0
    write(rendered)
    print(f"wrote {len(rendered)} files to {RPC_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
