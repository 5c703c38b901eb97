"""TensorBoard event-file writing: the only module that touches TensorBoard internals.

Uses the ``tensorboard`` package's own event-file writer and protobufs, so neither TensorFlow
nor PyTorch is needed. Every summary goes through :meth:`TensorBoardWriter._add_summary`;
each ``add_*`` method only builds a ``Summary`` proto.

Records written (and the TensorBoard tab that shows them):

- scalars (``simple_value``) -> Scalars; text (``text`` plugin scalar string tensor, rendered
  as Markdown) -> Text;
- images (legacy ``Summary.Image``, PNG-encoded) -> Images;
- histograms (legacy ``HistogramProto``, see :func:`histogram_proto`) -> Histograms and
  Distributions;
- hparams experiment, session start / end (``hparams`` plugin data) -> HParams. The
  experiment record says which hyperparameters are columns and which metrics come first
  (TensorBoard shows the first 5 of each); every job of a sweep writes the same one, so
  whichever TensorBoard picks, the table is the same. Without it, TensorBoard derives the
  experiment from every session under ``--logdir``.

TensorBoard overlays *runs*, not tags: a writer's :meth:`TensorBoardWriter.child` writes a run
in a subdirectory (``train/``, ``val/``, ``test/``), so one tag logged in each of them is one
chart with a curve per split, and the HParams dashboard reads those curves as metrics of the
parent's session (metric group = the subdirectory).
"""
from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Collection, Iterator, Mapping, NamedTuple, Sequence

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
from tensorboard.summary.writer import record_writer as _record_writer
from tensorboard.summary.writer.event_file_writer import EventFileWriter, _AsyncWriterThread

from convtrain.data.images import encode_png
from convtrain.errors import InternalError

#: default number of equal-width histogram buckets between the values' min and max.
HISTOGRAM_BUCKETS = 30
#: session end states accepted by :meth:`TensorBoardWriter.add_session_end`.
SESSION_STATUSES = {"success": hparams_api.STATUS_SUCCESS,
                    "failure": hparams_api.STATUS_FAILURE,
                    "running": hparams_api.STATUS_RUNNING,
                    "unknown": hparams_api.STATUS_UNKNOWN}

HParamValue = bool | int | float | str

# --- the records' checksums, fast -------------------------------------------------------------
# Every event record carries a masked CRC-32C of its bytes. Without TensorFlow, TensorBoard's
# writer computes it in a Python loop over the bytes (~0.15-0.5 us each): about 0.5 s of a
# default 30-epoch run, whose pictures make ~1 MB of records. The CRC is linear, so the bytes
# are cut into lanes of _LANE bytes whose CRCs NumPy computes side by side, then chained with
# the precomputed map "advance a CRC state over _LANE zero bytes" (8x faster on 50 KB).

_CRC32C_POLY = 0x82F63B78  # Castagnoli, bit-reflected
_LANE = 128


def _crc_byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_CRC32C_POLY), table >> 1)
    return table.astype(np.uint32)


def _crc_advance(states: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Raw CRC states ``(L,)`` after the bytes ``data`` ``(L, m)`` (row i feeds state i)."""
    for column in data.T:
        states = _CRC_TABLE[(states ^ column) & 0xFF] ^ (states >> 8)
    return states


def _crc_lane_shift() -> list[list[int]]:
    """4 byte tables of the linear map M "advance a raw state over _LANE zero bytes":
    ``M s = T0[s & 255] ^ T1[(s >> 8) & 255] ^ T2[(s >> 16) & 255] ^ T3[s >> 24]``."""
    columns = _crc_advance(np.uint32(1) << np.arange(32, dtype=np.uint32),
                           np.zeros((32, _LANE), np.uint8))  # M e_k
    tables = np.zeros((4, 256), np.uint32)
    for part in range(4):
        for bit in range(8):
            low = 1 << bit
            tables[part, low:2 * low] = tables[part, :low] ^ columns[8 * part + bit]
    return tables.tolist()


_CRC_TABLE = _crc_byte_table()
_CRC_TABLE_LIST = _CRC_TABLE.tolist()
_CRC_SHIFT = _crc_lane_shift()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TensorBoard's event records use it."""
    buf = np.frombuffer(data, np.uint8)
    lanes = buf.size // _LANE
    state = 0xFFFFFFFF
    if lanes >= 8:  # below, the plain loop is as fast
        partial = _crc_advance(np.zeros(lanes, np.uint32),
                               buf[:lanes * _LANE].reshape(lanes, _LANE)).tolist()
        t0, t1, t2, t3 = _CRC_SHIFT
        for lane_crc in partial:  # state over lanes 0..j, then lane j+1 (its CRC from 0)
            state = (t0[state & 255] ^ t1[(state >> 8) & 255] ^ t2[(state >> 16) & 255]
                     ^ t3[state >> 24] ^ lane_crc)
        buf = buf[lanes * _LANE:]
    table = _CRC_TABLE_LIST
    for byte in buf.tolist():
        state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The record checksum: :func:`crc32c` rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# the record writer looks the function up in its module at every record
_record_writer.masked_crc32c = masked_crc32c


class Metric(NamedTuple):
    """A metric column of the HParams dashboard: scalar ``tag`` of the run ``group`` below the
    session's run ("" = the session's own run, ``val`` = its ``val/`` child)."""

    group: str
    tag: str
    display_name: str = ""


def _quiet_event_writer_thread(args: Any) -> None:
    """``threading.excepthook``: a disk error in the event file's writer thread prints no
    traceback; the writer re-raises it at its next call in the training thread, where
    :class:`TensorBoardWriter` names the file (one line). Anything else goes to the hook
    that was there before."""
    if isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError):
        return
    _previous_excepthook(args)


_previous_excepthook = threading.excepthook


def _install_quiet_event_writer_thread() -> None:
    global _previous_excepthook
    if threading.excepthook is not _quiet_event_writer_thread:
        _previous_excepthook = threading.excepthook
        threading.excepthook = _quiet_event_writer_thread


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
    """A ``google.protobuf.Value`` for one hyperparameter (bool before int: bool is an int).

    Integers go as their decimal text: TensorBoard prints every number with 5 significant
    digits (16 -> ``16.000``), text as it is (the price: a column of integers sorts as text)."""
    if isinstance(value, (bool, np.bool_)):
        return struct_pb2.Value(bool_value=bool(value))
    if isinstance(value, (int, np.integer)):
        return struct_pb2.Value(string_value=str(int(value)))
    if isinstance(value, (float, np.floating)):
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
    ...     tb.child("train").add_scalar("epoch/loss", 0.7, step=1)

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
        self._children: dict[str, TensorBoardWriter] = {}
        if not self.enabled:
            return
        self._failed = False
        _install_quiet_event_writer_thread()
        self.logdir.mkdir(parents=True, exist_ok=True)
        suffix = self._suffix = f".{os.getpid()}.{secrets.token_hex(4)}"
        with self._naming_the_file():
            # flush_secs is a fallback only: the Trainer flushes after every epoch
            self._writer = EventFileWriter(str(self.logdir), max_queue_size=100,
                                           flush_secs=30, filename_suffix=suffix)
        # the writer has no public accessor for its file; the random suffix makes it unique
        self.path = next(self.logdir.glob(f"events.out.tfevents.*{suffix}"))

    @contextlib.contextmanager
    def _naming_the_file(self) -> Iterator[None]:
        """A disk error (full, read-only) of the event file, raised with the file's path: the
        writer's own error (often from its thread) names no file."""
        try:
            yield
        except OSError as exc:
            self._failed = True
            if exc.filename:
                raise
            path = self.path or next(self.logdir.glob(f"events.out.tfevents.*{self._suffix}"),
                                     self.logdir)
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc

    def child(self, name: str) -> "TensorBoardWriter":
        """The writer of the run ``<logdir>/<name>`` (its directory and event file are made on
        first use; flushed and closed with this one)."""
        if self._closed:
            raise InternalError(f"TensorBoardWriter for {self.logdir} is closed")
        if name not in self._children:
            self._children[name] = TensorBoardWriter(self.logdir / name, enabled=self.enabled)
        return self._children[name]

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        """One point ``(step, value)`` of the curve ``tag`` (e.g. ``"epoch/loss"``)."""
        if not self.enabled:
            return
        value = float(value)
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag,
                                                                       simple_value=value)])
        self._add_summary(summary, step)

    def add_text(self, tag: str, text: str, step: int = 0) -> None:
        """A text entry, rendered as Markdown by TensorBoard's Text tab (a scalar string
        tensor: TensorBoard draws a table around a tensor of shape ``(1,)``)."""
        if not self.enabled:
            return
        meta = text_metadata.create_summary_metadata(display_name=tag, description="")
        tensor = TensorProto(dtype="DT_STRING", string_val=[str(text).encode("utf-8")],
                             tensor_shape=TensorShapeProto())
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

    def add_experiment(self, hparams: Mapping[str, HParamValue], metrics: Sequence[Metric], *,
                       differing: Collection[str] = ()) -> None:
        """Declare the HParams dashboard's columns: ``hparams`` (name -> a value, which gives
        the column's type; integers are text, see :func:`_hparam_value`) and ``metrics`` in
        order (the dashboard shows the first 5 of each, hyperparameters in ``differing`` first,
        then by name).
        """
        if not self.enabled:
            return
        infos = []
        for name, value in hparams.items():
            kind = _hparam_value(name, value).WhichOneof("kind")
            infos.append(hparams_api.HParamInfo(
                name=str(name), differs=name in differing,
                type={"bool_value": hparams_api.DATA_TYPE_BOOL,
                      "number_value": hparams_api.DATA_TYPE_FLOAT64}.get(
                          kind, hparams_api.DATA_TYPE_STRING)))
        experiment = hparams_api.Experiment(
            time_created_secs=time.time(), hparam_infos=infos,
            metric_infos=[hparams_api.MetricInfo(
                name=hparams_api.MetricName(group=m.group, tag=m.tag),
                display_name=m.display_name) for m in metrics])
        self._add_hparams_record(hparams_metadata.EXPERIMENT_TAG,
                                 hparams_data.HParamsPluginData(experiment=experiment))

    def add_session_start(self, hparams: Mapping[str, HParamValue], *,
                          start_time: float | None = None) -> None:
        """Declare this event file's run a session of the HParams dashboard.

        ``hparams``: name -> bool / int / float / str (integers as text, see
        :func:`_hparam_value`). Each run holding a session start becomes one row; its metric
        columns are the last values of the scalar tags of the run and of its children.

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
        """Write queued events to disk (this run's and its children's).

        Raises:
            OSError: the disk refused an event file (``filename``: its path)."""
        if self.enabled and not self._closed:
            with self._naming_the_file():
                self._writer.flush()
            for child in self._children.values():
                child.flush()

    def close(self) -> None:
        """Flush and close the files, the children's first (idempotent). After a disk error
        was raised, closing does not raise it again (the run already reports it); every file
        is closed even when one fails (the first error is raised)."""
        if self.enabled and not self._closed:
            self._closed = True
            failed = self._failed
            error: OSError | None = None
            for child in self._children.values():
                try:
                    child.close()
                except OSError as exc:
                    error = error or exc
            try:
                with self._naming_the_file():
                    self._writer.close()
            except OSError:
                if not failed:
                    raise
            if error is not None:
                raise error
        self._closed = True

    def __enter__(self) -> "TensorBoardWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
