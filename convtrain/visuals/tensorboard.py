"""TensorBoard event-file writing: the only module that touches TensorBoard internals.

Uses the ``tensorboard`` package's own event-file writer and protobufs, so neither TensorFlow
nor PyTorch is needed. Every summary goes through :meth:`TensorBoardWriter._add_summary`;
each ``add_*`` method only builds a ``Summary`` proto.

Records written (and the TensorBoard tab that shows them):

- scalars (``simple_value``) -> Scalars; text (``text`` plugin tensor) -> Text;
- images (legacy ``Summary.Image``, PNG-encoded) -> Images;
- histograms (legacy ``HistogramProto``, see :func:`histogram_proto`) -> Histograms and
  Distributions;
- hparams session start / end (``hparams`` plugin data) -> HParams. No ``Experiment`` record
  is written: with one per job, TensorBoard would pick an arbitrary job's list and mark no
  hyperparameter as differing; without it, TensorBoard derives the experiment from every
  session under ``--logdir`` (types, value ranges, which keys differ across a sweep) and
  offers every scalar tag of the sessions as a metric.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

import numpy as np
from google.protobuf import struct_pb2  # protobuf ships with tensorboard
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.proto.summary_pb2 import HistogramProto
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.plugins.hparams import api_pb2 as hparams_api
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2 as hparams_data
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter, _AsyncWriterThread

from convtrain.data.images import encode_png
from convtrain.errors import InternalError


def _quiet_writer_thread_errors(args: Any, previous: Any = threading.excepthook) -> None:
    """TensorBoard's writer thread prints the traceback of a failed write (a full disk) before
    the writer raises the same error in the main thread on its next call; that one becomes a
    one-line message (``TensorBoardWriter`` names the file), so the thread's print is dropped."""
    if isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError):
        return
    previous(args)


threading.excepthook = _quiet_writer_thread_errors

#: default number of equal-width histogram buckets between the values' min and max.
HISTOGRAM_BUCKETS = 30
#: session end states accepted by :meth:`TensorBoardWriter.add_session_end`.
SESSION_STATUSES = {"success": hparams_api.STATUS_SUCCESS,
                    "failure": hparams_api.STATUS_FAILURE,
                    "running": hparams_api.STATUS_RUNNING,
                    "unknown": hparams_api.STATUS_UNKNOWN}

HParamValue = bool | int | float | str


def histogram_proto(values: Any, buckets: int = HISTOGRAM_BUCKETS) -> HistogramProto | None:
    """Summarise ``values`` (any shape; flattened) as a TensorBoard ``HistogramProto``.

    Buckets: ``buckets`` equal-width bins spanning ``[min, max]`` of the finite values; value
    ``v`` falls in bin ``floor((v - min) / (max - min) * buckets)`` and ``max`` in the last one
    (so bins are half-open ``[a, b)`` up to float rounding, like ``numpy.histogram``'s).
    ``bucket_limit[i]`` is the right edge ``min + (i + 1) * (max - min) / buckets`` of bin ``i``
    (TensorBoard's convention: the left edge of bin 0 is ``min``), so ``bucket_limit[-1] ==
    max`` and ``sum(bucket) == num``. When all values are equal there is one bucket with limit
    ``max``.
    NaN and inf are left out of every field (a histogram cannot place them); None when no
    value is finite.

    Raises:
        InternalError: for ``buckets < 1``.
    """
    if buckets < 1:
        raise InternalError(f"histogram: expected at least 1 bucket, got {buckets}")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        counts, limits = np.array([v.size]), np.array([hi])
    else:
        # bincount of the bin indices: several times faster than np.histogram on
        # parameter-sized arrays; dividing first keeps a subnormal range from overflowing
        index = ((v - lo) / (hi - lo) * buckets).astype(np.intp)
        counts = np.bincount(np.minimum(index, buckets - 1), minlength=buckets)
        limits = lo + (hi - lo) * np.arange(1, buckets + 1) / buckets
        limits[-1] = hi  # exact, whatever the rounding above
    return HistogramProto(min=lo, max=hi, num=float(v.size), sum=float(v.sum()),
                          sum_squares=float(np.dot(v, v)), bucket_limit=limits.tolist(),
                          bucket=counts.astype(np.float64).tolist())


def _hparam_value(name: str, value: Any) -> Any:
    """A ``google.protobuf.Value`` for one hyperparameter (bool before int: bool is an int)."""
    if isinstance(value, (bool, np.bool_)):
        return struct_pb2.Value(bool_value=bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return struct_pb2.Value(number_value=float(value))
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    raise InternalError(f"hparam '{name}': expected bool, int, float or str, got "
                    f"{type(value).__name__} {value!r}")


class TensorBoardWriter:
    """Writes summaries into one new event file under ``logdir``.

    The file name ends in ``.<pid>.<random hex>`` so that jobs starting in the same second in
    the same directory (a sweep on a shared filesystem, two hosts with equal pids) never share
    or clobber a file. Events are queued; :meth:`flush` (the Trainer calls it every epoch) makes
    them readable while the run goes on.

    >>> with TensorBoardWriter("runs/x") as tb:                        # doctest: +SKIP
    ...     tb.add_scalar("train/loss", 0.7, step=1)

    Args:
        logdir: directory for the event file (created).
        enabled: False makes every method a no-op and creates no directory or file
            (``logger.tensorboard=false``).

    Attributes:
        logdir: the directory holding the event file.
        path: the event file's path (None when disabled).
        enabled: whether anything is written.
    """

    def __init__(self, logdir: str | os.PathLike, *, enabled: bool = True):
        self.logdir = Path(logdir)
        self.enabled = bool(enabled)
        self.path: Path | None = None
        self._closed = False
        if not self.enabled:
            return
        self.logdir.mkdir(parents=True, exist_ok=True)
        suffix = f".{os.getpid()}.{secrets.token_hex(4)}"
        # flush_secs is a fallback only: the Trainer flushes after every epoch
        self._writer = EventFileWriter(str(self.logdir), max_queue_size=100, flush_secs=30,
                                       filename_suffix=suffix)
        # the writer has no public accessor for its file; the random suffix makes it unique
        self.path = next(self.logdir.glob(f"events.out.tfevents.*{suffix}"))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        """One point ``(step, value)`` of the curve ``tag`` (e.g. ``"train/loss"``)."""
        if not self.enabled:
            return
        value = float(value)
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag,
                                                                       simple_value=value)])
        self._add_summary(summary, step)

    def add_text(self, tag: str, text: str, step: int = 0) -> None:
        """A text entry (Markdown, shown by TensorBoard's Text tab)."""
        if not self.enabled:
            return
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

    def add_image(self, tag: str, image: np.ndarray, step: int, *,
                  png: bytes | None = None) -> None:
        """An image: uint8 ``(H, W)`` grey or ``(H, W, 3)`` RGB, stored as PNG.

        ``png``: ``encode_png(image)`` when the caller already has it (saves encoding twice).
        """
        if not self.enabled:
            return
        img = np.asarray(image)
        encoded = encode_png(img) if png is None else png  # encode_png validates the pixels
        picture = summary_pb2.Summary.Image(height=img.shape[0], width=img.shape[1],
                                            colorspace=1 if img.ndim == 2 else 3,
                                            encoded_image_string=encoded)
        self._add_summary(summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, image=picture)]), step)

    def add_histogram(self, tag: str, values: Any, step: int,
                      buckets: int = HISTOGRAM_BUCKETS) -> None:
        """The distribution of ``values`` (host array, any shape); see :func:`histogram_proto`.
        Arrays without any finite value are skipped (nothing to draw)."""
        if not self.enabled:
            return
        histo = histogram_proto(values, buckets)
        if histo is None:
            return
        self._add_summary(summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, histo=histo)]), step)

    def add_session_start(self, hparams: Mapping[str, HParamValue], *,
                          start_time: float | None = None) -> None:
        """Declare this event file's run a session of the HParams dashboard.

        ``hparams``: name -> bool / int / float / str (numbers are stored as float64). Each
        run holding a session start becomes one row; its metric columns are the last values
        of the run's scalar tags.

        Raises:
            InternalError: for a value of another type (flatten and stringify first).
        """
        if not self.enabled:
            return
        info = hparams_data.SessionStartInfo(
            start_time_secs=time.time() if start_time is None else float(start_time))
        for name, value in hparams.items():
            info.hparams[str(name)].CopyFrom(_hparam_value(name, value))
        self._add_hparams_record(hparams_metadata.SESSION_START_INFO_TAG,
                                 hparams_data.HParamsPluginData(session_start_info=info))

    def add_session_end(self, status: str = "success", *, end_time: float | None = None) -> None:
        """Close the HParams session with ``status`` (a key of :data:`SESSION_STATUSES`)."""
        if not self.enabled:
            return
        if status not in SESSION_STATUSES:
            raise InternalError(f"session status: expected one of {', '.join(SESSION_STATUSES)}, "
                             f"got {status!r}")
        info = hparams_data.SessionEndInfo(
            status=SESSION_STATUSES[status],
            end_time_secs=time.time() if end_time is None else float(end_time))
        self._add_hparams_record(hparams_metadata.SESSION_END_INFO_TAG,
                                 hparams_data.HParamsPluginData(session_end_info=info))

    def _add_hparams_record(self, tag: str, data: hparams_data.HParamsPluginData) -> None:
        # The plugin reads only the metadata; the empty tensor keeps the value well-formed
        # for readers that expect one (as TensorBoard's own hparams summaries do).
        meta = hparams_metadata.create_summary_metadata(data)
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, metadata=meta, tensor=hparams_metadata.NULL_TENSOR)])
        self._add_summary(summary, 0)

    def _add_summary(self, summary: summary_pb2.Summary, step: int) -> None:
        """Append ``summary`` at ``step`` (queued; written on :meth:`flush`)."""
        if self._closed:
            raise InternalError(f"TensorBoardWriter for {self.logdir} is closed")
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        with self._naming_the_file():
            self._writer.add_event(event)

    def flush(self) -> None:
        """Write queued events to disk."""
        if self.enabled and not self._closed:
            with self._naming_the_file():
                self._writer.flush()

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self.enabled and not self._closed:
            self._closed = True
            with self._naming_the_file():
                self._writer.close()
        self._closed = True

    @contextlib.contextmanager
    def _naming_the_file(self):
        """A failed write of the writer's thread (it has no file name) as an OSError naming the
        event file, which the CLI reports in one line."""
        try:
            yield
        except OSError as exc:
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def __enter__(self) -> "TensorBoardWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
