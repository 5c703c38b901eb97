"""TensorBoard event-file writing: the only module that touches TensorBoard internals.

Uses the ``tensorboard`` package's protobufs, so neither TensorFlow nor PyTorch is needed, and
writes the event files itself (TensorBoard's writer reopens the file for every record from a
thread that competes with training for the interpreter). Every summary goes through
:meth:`TensorBoardWriter._add_summary`; each ``add_*`` method only builds a ``Summary`` proto.

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
import functools
import math
import os
import secrets
import socket
import struct
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Collection, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
# only TensorBoard's generated protobuf modules: its writer and plugin helpers import its
# TensorFlow stub (and fsspec), ~0.1 s of every run's start-up
from google.protobuf import struct_pb2  # protobuf ships with tensorboard
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.proto.summary_pb2 import HistogramProto
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.compat.proto.types_pb2 import DT_FLOAT
from tensorboard.plugins.hparams import api_pb2 as hparams_api
from tensorboard.plugins.hparams import plugin_data_pb2 as hparams_data
from tensorboard.plugins.text import plugin_data_pb2 as text_data

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

#: seconds: the loop flushes at every epoch end; within a longer epoch, the records reach the
#: file with the first one this long after the last write (TensorFlow's writers wait 10 s too)
FLUSH_SECS = 10.0

# what TensorBoard's plugins look for (tensorboard.plugins.{text,hparams}.metadata)
TEXT_PLUGIN, HPARAMS_PLUGIN = "text", "hparams"
HPARAMS_EXPERIMENT_TAG = "_hparams_/experiment"
HPARAMS_SESSION_START_TAG = "_hparams_/session_start_info"
HPARAMS_SESSION_END_TAG = "_hparams_/session_end_info"
#: the value of an hparams record: an empty float vector (the plugin reads only the metadata)
_NULL_TENSOR = TensorProto(dtype=DT_FLOAT, tensor_shape=TensorShapeProto(
    dim=[TensorShapeProto.Dim(size=0)]))

# --- the records' checksums, fast -------------------------------------------------------------
# Every event record carries a masked CRC-32C of its bytes, which Python's zlib does not offer
# (its CRC-32 has another polynomial) and TensorBoard computes in a Python loop over the bytes
# (~0.2 us each; a default 30-epoch run writes ~1.5 MB of records). The raw CRC (start 0, no
# final inversion) is linear over GF(2) and leading zero bytes leave it unchanged, so: invert
# the first 4 bytes (= the standard start state 0xFFFFFFFF), pad the front with zeros to whole
# lanes of _LANE bytes, take each lane's raw CRC at once as the XOR of one table entry per byte
# (_POSITION_TABLES: byte b at position j of a lane), and chain the lanes with the map "advance
# a state over _LANE zero bytes" (_LANE_SHIFT). ~15x faster than a byte loop on 20 KB.

_CRC32C_POLY = 0x82F63B78  # Castagnoli, bit-reflected
_LANE = 256
_BYTE_LOOP_BELOW = 64  # bytes: below, a plain loop over the bytes is as fast


def _crc_byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_CRC32C_POLY), table >> 1)
    return table.astype(np.uint32)


_CRC_TABLE = _crc_byte_table()
_CRC_TABLE_LIST = _CRC_TABLE.tolist()


def _over_zero_byte(states: np.ndarray) -> np.ndarray:
    """Raw CRC states after one more zero byte."""
    return _CRC_TABLE[states & 0xFF] ^ (states >> 8)


def _crc_position_tables() -> np.ndarray:
    """``(_LANE * 256,)``: entry ``256 j + b`` = raw CRC of a lane holding byte ``b`` at
    position ``j`` and zeros elsewhere (= byte b followed by ``_LANE - 1 - j`` zero bytes)."""
    tables = np.empty((_LANE, 256), np.uint32)
    tables[-1] = table = _CRC_TABLE
    for j in range(_LANE - 2, -1, -1):
        tables[j] = table = _over_zero_byte(table)
    return tables.ravel()


def _crc_lane_shift() -> list[list[int]]:
    """4 byte tables of the linear map M "advance a raw state over _LANE zero bytes":
    ``M s = T0[s & 255] ^ T1[(s >> 8) & 255] ^ T2[(s >> 16) & 255] ^ T3[s >> 24]``."""
    columns = np.uint32(1) << np.arange(32, dtype=np.uint32)  # M e_k, after the loop
    for _ in range(_LANE):
        columns = _over_zero_byte(columns)
    tables = np.zeros((4, 256), np.uint32)
    for part in range(4):
        for bit in range(8):
            low = 1 << bit
            tables[part, low:2 * low] = tables[part, :low] ^ columns[8 * part + bit]
    return tables.tolist()


_POSITION_TABLES = _crc_position_tables()
_POSITION_OFFSETS = np.arange(_LANE, dtype=np.intp) * 256
_LANE_SHIFT = _crc_lane_shift()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TensorBoard's event records use it."""
    n = len(data)
    if n < _BYTE_LOOP_BELOW:
        state, table = 0xFFFFFFFF, _CRC_TABLE_LIST
        for byte in data:
            state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
        return state ^ 0xFFFFFFFF
    lanes = -(-n // _LANE)
    padded = np.zeros(lanes * _LANE, np.uint8)
    padded[-n:] = np.frombuffer(data, np.uint8)
    padded[-n:-n + 4] ^= 0xFF  # the start state 0xFFFFFFFF, fed in with the first 4 bytes
    lane_crcs = np.bitwise_xor.reduce(
        _POSITION_TABLES[padded.reshape(lanes, _LANE) + _POSITION_OFFSETS], axis=1).tolist()
    t0, t1, t2, t3 = _LANE_SHIFT
    state = 0
    for lane_crc in lane_crcs:  # the state over lanes 0..j, then lane j+1 (its CRC from 0)
        state = (t0[state & 255] ^ t1[(state >> 8) & 255] ^ t2[(state >> 16) & 255]
                 ^ t3[state >> 24] ^ lane_crc)
    return state ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The record checksum: :func:`crc32c` rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


@functools.lru_cache(maxsize=1024)
def _record_header(length: int) -> bytes:
    """A record's first 12 bytes: ``length`` (uint64 little-endian) and its masked CRC; a run's
    scalar records have a handful of lengths, so each is computed once."""
    header = struct.pack("<Q", length)
    return header + struct.pack("<I", masked_crc32c(header))


def event_record(event: event_pb2.Event) -> bytes:
    """``event`` framed as a record of a TensorBoard event file (TFRecord): its length (uint64
    little-endian), the masked CRC of those 8 bytes, the serialized event, its masked CRC."""
    data = event.SerializeToString()
    return b"".join((_record_header(len(data)), data, struct.pack("<I", masked_crc32c(data))))


class Metric(NamedTuple):
    """A metric column of the HParams dashboard: scalar ``tag`` of the run ``group`` below the
    session's run ("" = the session's own run, ``val`` = its ``val/`` child)."""

    group: str
    tag: str
    display_name: str = ""


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
    total, squares = float(v.sum()), float(np.dot(v, v))
    if not math.isfinite(total + squares):  # NaN or inf among the values (or an overflow)
        v = v[np.isfinite(v)]
        total, squares = float(v.sum()), float(np.dot(v, v))
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
    return HistogramProto(min=lo, max=hi, num=float(v.size), sum=total,
                          sum_squares=squares, bucket_limit=limits.tolist(),
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
    or clobber a file. Records are kept in memory; :meth:`flush` (the logger calls it every
    epoch) appends them to the file, which makes them readable while the run goes on.

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
        self._error: OSError | None = None  # the disk error raised, raised again on writing
        self._pending: list[bytes] = []  # records not yet in the file
        self.logdir.mkdir(parents=True, exist_ok=True)
        # TensorBoard reads a run's event files in name order: the nanoseconds after the
        # host keep a resumed run's file after the earlier one even within the same second
        # (its records would otherwise come first); pid and random hex keep names unique
        seconds, nanoseconds = divmod(time.time_ns(), 10**9)
        self.path = self.logdir / (f"events.out.tfevents.{seconds:010d}.{socket.gethostname()}."
                                   f"{nanoseconds:09d}.{os.getpid()}.{secrets.token_hex(4)}")
        self._file = open(self.path, "xb")  # noqa: SIM115 (closed by close(); names itself)
        # the file starts with its format's version, on disk at once, as TensorBoard's own
        # writers do
        self._pending.append(event_record(event_pb2.Event(wall_time=time.time(),
                                                          file_version="brain.Event:2")))
        try:
            self._write_pending()
        except OSError:
            # closing retries the buffered write and fails again, naming no file: the error
            # raised is the one above, which names the event file
            with contextlib.suppress(OSError):
                self._file.close()
            raise

    @contextlib.contextmanager
    def _naming_the_file(self) -> Iterator[None]:
        """A disk error (full, read-only) of the event file, raised with the file's path (a
        failed write names no file)."""
        try:
            yield
        except OSError as exc:
            if exc.filename:
                self._error = exc
                raise
            self._error = OSError(exc.errno, exc.strerror or str(exc), str(self.path))
            raise self._error from exc

    def _write_pending(self) -> None:
        """Append the pending records to the file and hand them to the OS. After a disk error,
        that error again (the file may end in a partial record: nothing more is written)."""
        if self._error is not None:
            raise self._error
        with self._naming_the_file():
            if self._pending:
                self._file.write(b"".join(self._pending))
                self._pending.clear()
            self._file.flush()
        self._written_at = time.monotonic()

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
        self.add_scalars({tag: value}, step)

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        """A point at ``step`` of each curve ``tag -> value``, in one record (an epoch's
        scalars: a record costs its framing and checksum whatever it holds)."""
        if not self.enabled or not values:
            return
        self._add_summary(summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in values.items()]), step)

    def add_text(self, tag: str, text: str, step: int = 0) -> None:
        """A text entry, rendered as Markdown by TensorBoard's Text tab (a scalar string
        tensor: TensorBoard draws a table around a tensor of shape ``(1,)``)."""
        if not self.enabled:
            return
        meta = summary_pb2.SummaryMetadata(
            display_name=tag, plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name=TEXT_PLUGIN, content=text_data.TextPluginData().SerializeToString()))
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
        self.add_histograms({tag: values}, step, buckets)

    def add_histograms(self, arrays: Mapping[str, Any] | Iterable[tuple[str, Any]], step: int,
                       buckets: int = HISTOGRAM_BUCKETS) -> None:
        """:meth:`add_histogram` of each ``tag -> values``, in one record. ``arrays`` may be
        an iterator of ``(tag, values)`` pairs: each array is summarised as it comes, so a
        caller copying a model's parameters to the host holds one copy at a time."""
        if not self.enabled:
            return
        pairs = arrays.items() if isinstance(arrays, Mapping) else arrays
        histograms = [(tag, histogram_proto(values, buckets)) for tag, values in pairs]
        if any(histo is not None for _, histo in histograms):
            self._add_summary(summary_pb2.Summary(value=[
                summary_pb2.Summary.Value(tag=tag, histo=histo)
                for tag, histo in histograms if histo is not None]), step)

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
        self._add_hparams_record(HPARAMS_EXPERIMENT_TAG,
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
        self._add_hparams_record(HPARAMS_SESSION_START_TAG,
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
        self._add_hparams_record(HPARAMS_SESSION_END_TAG,
                                 hparams_data.HParamsPluginData(session_end_info=info))

    def _add_hparams_record(self, tag: str, data: hparams_data.HParamsPluginData) -> None:
        # The plugin reads only the metadata; the empty tensor keeps the value well-formed
        # for readers that expect one (as TensorBoard's own hparams summaries do).
        meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=HPARAMS_PLUGIN, content=data.SerializeToString()))  # data version 0
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, metadata=meta, tensor=_NULL_TENSOR)])
        self._add_summary(summary, 0)

    def _add_summary(self, summary: summary_pb2.Summary, step: int) -> None:
        """Append ``summary`` at ``step`` (written on :meth:`flush`, or now when the last write
        is :data:`FLUSH_SECS` old)."""
        if self._closed:
            raise InternalError(f"TensorBoardWriter for {self.logdir} is closed")
        self._pending.append(event_record(event_pb2.Event(wall_time=time.time(), step=int(step),
                                                          summary=summary)))
        if time.monotonic() - self._written_at >= FLUSH_SECS:
            self._write_pending()

    def flush(self) -> None:
        """Write pending records to disk (this run's and its children's).

        Raises:
            OSError: the disk refused an event file (``filename``: its path)."""
        if self.enabled and not self._closed:
            self._write_pending()
            for child in self._children.values():
                child.flush()

    def close(self) -> None:
        """Flush and close the files, the children's first (idempotent). After a disk error
        was raised, closing does not raise it again (the run already reports it); every file
        is closed even when one fails (the first error is raised)."""
        if self.enabled and not self._closed:
            self._closed = True
            error: OSError | None = None
            for child in self._children.values():
                try:
                    child.close()
                except OSError as exc:
                    error = error or exc
            try:
                if self._error is None:
                    self._write_pending()
            except OSError as exc:
                error = error or exc
            finally:
                with contextlib.suppress(OSError):  # flushed above: nothing left to fail
                    self._file.close()
            if error is not None:
                raise error
        self._closed = True

    def __enter__(self) -> "TensorBoardWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
