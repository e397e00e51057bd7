"""The gRPC API and experiment-spec reference pages, generated from ``protos/``.

The ``.proto`` files are the one home of the API's documentation: protoc (from
grpcio-tools) compiles them with their comments (``--include_source_info``), and
the pages are written from that descriptor set. The spec page adds the defaults
that :func:`taylorglo_tf.spec.apply_defaults` fills in, so a default is read from
the code that applies it, never copied.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
PACKAGE = "taylorglo.v1"

# SourceCodeInfo path numbers (descriptor.proto): where a comment belongs.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE, _FILE_SYNTAX = 4, 5, 6, 12
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE, _SERVICE_METHOD = 2, 2

_SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
}


@dataclass
class Field:
    name: str
    type: str  # a scalar's name, or a message's / enum's full name without the leading dot
    label: str  # "", "optional" or "repeated"
    comment: str
    is_message: bool = False
    is_enum: bool = False


@dataclass
class Message:
    name: str  # full name, e.g. taylorglo.v1.TaskSpec
    comment: str
    fields: list[Field] = field(default_factory=list)


@dataclass
class EnumValue:
    name: str
    number: int
    comment: str


@dataclass
class Enum:
    name: str
    comment: str
    values: list[EnumValue] = field(default_factory=list)


@dataclass
class Method:
    name: str
    request: str
    response: str
    server_streaming: bool
    client_streaming: bool
    comment: str


@dataclass
class Service:
    name: str
    comment: str
    methods: list[Method] = field(default_factory=list)


@dataclass
class ProtoFile:
    name: str  # e.g. taylorglo/v1/types.proto
    comment: str
    services: list[Service] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    enums: list[Enum] = field(default_factory=list)


def compile_protos(proto_root: Path = PROTO_ROOT) -> descriptor_pb2.FileDescriptorSet:
    """The descriptor set, comments included, of every ``.proto`` under ``proto_root``."""
    import grpc_tools

    protos = sorted(proto_root.rglob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files under {proto_root}")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "protos.pb"
        # In its own process, as taylorglo_tf.rpc.generate runs it: protoc's bundled
        # protobuf must not meet another in one process.
        args = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *(str(p.relative_to(proto_root)) for p in protos),
        ]
        completed = subprocess.run(args, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"protoc failed on {proto_root}: {completed.stderr.strip()}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _clean(comment: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in comment.strip("\n").split("\n")]
    return "\n".join(lines).strip()


def read_files(proto_root: Path = PROTO_ROOT) -> list[ProtoFile]:
    """Every proto file under ``proto_root`` with its services, messages, enums and comments."""
    files = []
    for proto in compile_protos(proto_root).file:
        comments: dict[tuple[int, ...], str] = {}
        header = ""
        for location in proto.source_code_info.location:
            path = tuple(location.path)
            if location.leading_comments:
                comments[path] = _clean(location.leading_comments)
            if path == (_FILE_SYNTAX,) and location.leading_detached_comments:
                header = "\n\n".join(_clean(c) for c in location.leading_detached_comments)
        out = ProtoFile(proto.name, header)
        for i, service in enumerate(proto.service):
            s = Service(service.name, comments.get((_FILE_SERVICE, i), ""))
            for j, method in enumerate(service.method):
                s.methods.append(
                    Method(
                        method.name,
                        method.input_type.lstrip("."),
                        method.output_type.lstrip("."),
                        method.server_streaming,
                        method.client_streaming,
                        comments.get((_FILE_SERVICE, i, _SERVICE_METHOD, j), ""),
                    )
                )
            out.services.append(s)
        for i, message in enumerate(proto.message_type):
            out.messages.extend(_messages(message, f"{proto.package}.", (_FILE_MESSAGE, i), comments))
        for i, enum in enumerate(proto.enum_type):
            out.enums.append(_enum(enum, f"{proto.package}.", (_FILE_ENUM, i), comments))
        files.append(out)
    return files


def _messages(
    message: descriptor_pb2.DescriptorProto, prefix: str, path: tuple[int, ...], comments: dict[tuple[int, ...], str]
) -> Iterator[Message]:
    m = Message(prefix + message.name, comments.get(path, ""))
    for j, f in enumerate(message.field):
        if f.label == f.LABEL_REPEATED:
            label = "repeated"
        elif f.proto3_optional:
            label = "optional"
        else:
            label = ""
        m.fields.append(
            Field(
                f.name,
                f.type_name.lstrip(".") or _SCALARS.get(f.type, str(f.type)),
                label,
                comments.get((*path, _MESSAGE_FIELD, j), ""),
                is_message=f.type == f.TYPE_MESSAGE,
                is_enum=f.type == f.TYPE_ENUM,
            )
        )
    yield m
    for k, nested in enumerate(message.nested_type):
        yield from _messages(nested, f"{m.name}.", (*path, _MESSAGE_NESTED, k), comments)


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto, prefix: str, path: tuple[int, ...], comments: dict[tuple[int, ...], str]
) -> Enum:
    e = Enum(prefix + enum.name, comments.get(path, ""))
    for j, value in enumerate(enum.value):
        e.values.append(EnumValue(value.name, value.number, comments.get((*path, _ENUM_VALUE, j), "")))
    return e


# --------------------------------------------------------------------------- rendering


def _short(name: str) -> str:
    return name.removeprefix(f"{PACKAGE}.")


def _anchor(name: str) -> str:
    return _short(name).replace(".", "-").lower()


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _type_link(type_name: str, known: set[str]) -> str:
    if type_name in known:
        return f"[`{_short(type_name)}`](#{_anchor(type_name)})"
    return f"`{type_name}`"


def grpc_page(proto_root: Path = PROTO_ROOT) -> str:
    """The gRPC API reference: every service, method, message and enum of ``proto_root``."""
    files = read_files(proto_root)
    own = [f for f in files if not f.name.startswith("google/")]
    known = {m.name for f in own for m in f.messages} | {e.name for f in own for e in f.enums}
    lines = [
        "# gRPC API",
        "",
        "Generated at build time from the `.proto` files in `protos/` (package `taylorglo.v1`): "
        "their comments are the text below, so this page never disagrees with the contract. "
        "Health checking (`grpc.health.v1.Health`) and server reflection are served beside these services.",
        "",
    ]
    for f in own:
        lines += [f"## `{f.name}`", ""]
        if f.comment:
            lines += [f.comment, ""]
        for service in f.services:
            lines += [f"### {service.name} {{ #{_anchor(service.name)} }}", ""]
            if service.comment:
                lines += [service.comment, ""]
            lines += ["| method | request | response | what it does |", "|---|---|---|---|"]
            for method in service.methods:
                request = ("stream " if method.client_streaming else "") + _type_link(method.request, known)
                response = ("stream " if method.server_streaming else "") + _type_link(method.response, known)
                lines.append(f"| `{method.name}` | {request} | {response} | {_cell(method.comment)} |")
            lines.append("")
        for message in f.messages:
            lines += [f"### {_short(message.name)} {{ #{_anchor(message.name)} }}", ""]
            if message.comment:
                lines += [message.comment, ""]
            if not message.fields:
                lines += ["No fields.", ""]
                continue
            lines += ["| field | type | meaning |", "|---|---|---|"]
            for fd in message.fields:
                kind = f"{fd.label} " if fd.label else ""
                lines.append(f"| `{fd.name}` | {kind}{_type_link(fd.type, known)} | {_cell(fd.comment)} |")
            lines.append("")
        for enum in f.enums:
            lines += [f"### {_short(enum.name)} {{ #{_anchor(enum.name)} }}", ""]
            if enum.comment:
                lines += [enum.comment, ""]
            lines += ["| value | number | meaning |", "|---|---|---|"]
            for value in enum.values:
                lines.append(f"| `{value.name}` | {value.number} | {_cell(value.comment)} |")
            lines.append("")
    return "\n".join(lines)


SPEC_MESSAGE = f"{PACKAGE}.ExperimentSpec"


def spec_defaults() -> dict[str, str]:
    """``{field path: default}`` as :func:`taylorglo_tf.spec.apply_defaults` fills them in.

    Two probes: a minimal spec, then one with flips/crops and CutMix on (whose
    parameters take defaults only then). The dataset is a file of unknown class
    count, so ``num_classes`` shows as inferred rather than as one dataset's.
    """
    from taylorglo_tf import spec as spec_module
    from taylorglo_tf.rpc import types_pb2

    def probe(augmented: bool) -> dict[str, str]:
        spec = types_pb2.ExperimentSpec()
        spec.task.dataset = "npz:probe.npz"
        if augmented:
            spec.task.augmentation.flip_crop = True
            spec.task.augmentation.cutmix_probability = 0.5
        filled = spec_module.to_dict(spec_module.apply_defaults(spec))
        before = spec_module.to_dict(spec)
        return {path: value for path, value in _flatten(filled) if (path, value) not in set(_flatten(before))}

    plain = probe(False)
    defaults = dict(plain)
    for path, value in probe(True).items():
        if path not in plain and path not in ("task.augmentation.flip_crop", "task.augmentation.cutmix_probability"):
            defaults[path] = f"{value} (when on)"
    return defaults


def _flatten(data: object, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _flatten(value, f"{prefix}{key}.")
    elif isinstance(data, list):
        yield prefix[:-1], "[" + ", ".join(str(v) for v in data) + "]"
    else:
        yield prefix[:-1], str(data).lower() if isinstance(data, bool) else str(data)


def spec_page(proto_root: Path = PROTO_ROOT, defaults: dict[str, str] | None = None) -> str:
    """The experiment-spec reference: every field reachable from ``ExperimentSpec``, its default and its rules."""
    messages = {m.name: m for f in read_files(proto_root) for m in f.messages}
    if SPEC_MESSAGE not in messages:
        raise KeyError(f"{SPEC_MESSAGE} is not defined under {proto_root}")
    defaults = spec_defaults() if defaults is None else defaults
    lines = [
        "# Experiment spec",
        "",
        "Generated at build time: the fields and their rules from `ExperimentSpec` in "
        "`protos/taylorglo/v1/types.proto`, the defaults from `taylorglo_tf.spec.apply_defaults`, "
        "the code that fills them in. A spec is a YAML or JSON file of these fields (snake_case "
        "or camelCase); see [the spec how-to](../how-to/spec.md) for an example.",
        "",
        "A field left out takes its default; a field written out keeps its value, 0 included. "
        "An unknown field or a value out of range is refused with the field's path and the value "
        "(`spec.search.population: ...`). A dash means no default: left out, the field is 0, "
        "empty or off.",
        "",
    ]
    root = messages[SPEC_MESSAGE]
    if root.comment:
        lines += [root.comment, ""]
    _spec_section(root, "", messages, defaults, lines)
    return "\n".join(lines)


def _spec_section(
    message: Message, prefix: str, messages: dict[str, Message], defaults: dict[str, str], lines: list[str]
) -> None:
    rows = []
    nested = []
    previous = ""
    for fd in message.fields:
        path = prefix + fd.name
        # A field under the previous one's comment ("optional int32 abort_epochs" after
        # abort_accuracy's): the proto documents the pair in one comment.
        comment = fd.comment or (f"See `{prefix}{previous}`." if previous else "")
        previous = fd.name if fd.comment and not fd.is_message else ""
        if fd.is_message and fd.type in messages:
            nested.append((fd, path))
            rows.append(f"| `{path}` | [section](#{path.replace('.', '-')}) | | {_cell(fd.comment)} |")
            continue
        kind = f"list of {fd.type}" if fd.label == "repeated" else fd.type
        default = defaults.get(path, "-")
        rows.append(f"| `{path}` | {kind} | {_cell(default)} | {_cell(comment)} |")
    heading = f"`{prefix[:-1]}`" if prefix else "Top level"
    anchor = prefix[:-1].replace(".", "-") or "top-level"
    lines += [f"## {heading} {{ #{anchor} }}", ""]
    if prefix and message.comment:
        lines += [message.comment, ""]
    lines += ["| field | type | default | rules |", "|---|---|---|---|", *rows, ""]
    for fd, path in nested:
        _spec_section(messages[fd.type], f"{path}.", messages, defaults, lines)
