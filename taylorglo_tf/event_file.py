"""One TensorBoard event file, the destination of a ``tensorboard.summary.Writer``, without TensorFlow.

``tensorboard.summary.Writer`` is TensorBoard's framework-free API for scalars;
where its data goes is an ``Output``. The package's own ``DirectoryOutput``
opens its file through ``tensorboard.compat.tf``, which imports TensorFlow
whenever it is installed (seconds that ``taylorglo result`` does not need), and
names the file itself. :class:`EventFile` writes to a file the caller opened,
so the result folder can write a temporary name and rename it.

Scalars are written as ``simple_value``s, the form every event reader knows
(TensorBoard, ``EventAccumulator``, ``tf.compat.v1.train.summary_iterator``).
"""

from __future__ import annotations

from typing import Any, BinaryIO

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary import Output
from tensorboard.summary.writer.record_writer import RecordWriter


class EventFile(Output):
    """A ``tensorboard.summary.Output`` into an event file opened by the caller.

    Args:
        handle: the file, open for binary writing; :meth:`close` closes it.
        wall_time: the time stamped on the file's first event, its version record.
    """

    def __init__(self, handle: BinaryIO, *, wall_time: float) -> None:
        self._records = RecordWriter(handle)
        self._write(event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2"))

    def emit_scalar(
        self,
        *,
        plugin_name: str,
        tag: str,
        data: Any,
        step: Any,
        wall_time: float,
        tag_metadata: bytes | None = None,
        description: str | None = None,
    ) -> None:
        """One scalar as its own event (``plugin_name`` and ``tag_metadata`` are the scalar plugin's)."""
        value = summary_pb2.Summary.Value(tag=tag, simple_value=float(data))
        if description:
            value.metadata.summary_description = description
        self._write(event_pb2.Event(wall_time=wall_time, step=int(step), summary=summary_pb2.Summary(value=[value])))

    def write(self, event: event_pb2.Event) -> None:
        """Any event as it is: HParams and image summaries, which ``Writer`` does not make."""
        self._write(event)

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()

    def _write(self, event: event_pb2.Event) -> None:
        self._records.write(event.SerializeToString())
