"""TensorBoard event-file writing: the only module that touches TensorBoard internals.

Uses the ``tensorboard`` package's own event-file writer and protobufs, so neither TensorFlow
nor PyTorch is needed. Every summary goes through :meth:`TensorBoardWriter._add_summary`;
new kinds (images, histograms, hparams) only have to build a ``Summary`` proto.
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from types import TracebackType

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class TensorBoardWriter:
    """Writes scalar and text summaries into one new event file under ``logdir``.

    The file name ends in ``.<pid>.<random hex>`` so that jobs starting in the same second in
    the same directory (a sweep on a shared filesystem, two hosts with equal pids) never share
    or clobber a file.

    >>> with TensorBoardWriter("runs/x") as tb:                        # doctest: +SKIP
    ...     tb.add_scalar("train/loss", 0.7, step=1)

    Attributes:
        logdir: the directory holding the event file.
        path: the event file's path.
    """

    def __init__(self, logdir: str | os.PathLike):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        suffix = f".{os.getpid()}.{secrets.token_hex(4)}"
        # flush_secs is a fallback only: the Trainer flushes after every epoch
        self._writer = EventFileWriter(str(self.logdir), max_queue_size=100, flush_secs=30,
                                       filename_suffix=suffix)
        # the writer has no public accessor for its file; the random suffix makes it unique
        self.path = next(self.logdir.glob(f"events.out.tfevents.*{suffix}"))
        self._closed = False

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        """One point ``(step, value)`` of the curve ``tag`` (e.g. ``"train/loss"``)."""
        value = float(value)
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag,
                                                                       simple_value=value)])
        self._add_summary(summary, step)

    def add_text(self, tag: str, text: str, step: int = 0) -> None:
        """A text entry (Markdown, shown by TensorBoard's Text tab)."""
        meta = text_metadata.create_summary_metadata(display_name=tag, description="")
        tensor = TensorProto(
            dtype="DT_STRING",
            string_val=[str(text).encode("utf-8")],
            tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]),
        )
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)]
        )
        self._add_summary(summary, step)

    def _add_summary(self, summary: summary_pb2.Summary, step: int) -> None:
        """Append ``summary`` at ``step`` (queued; written on :meth:`flush`)."""
        if self._closed:
            raise RuntimeError(f"TensorBoardWriter for {self.logdir} is closed")
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        self._writer.add_event(event)

    def flush(self) -> None:
        """Write queued events to disk."""
        if not self._closed:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if not self._closed:
            self._writer.close()
            self._closed = True

    def __enter__(self) -> "TensorBoardWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
