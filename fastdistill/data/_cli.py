"""``fastdistill data compress|inspect``: data files in, a compressed ``.npz`` (plus the fitted compressors and a JSON
report) out.

Inputs: ``.npy`` (streamed in row chunks: bounded memory whatever its size), ``.npz``, ``.csv`` (comma-separated,
optional header line) and whitespace-separated text (any other suffix). A bad file (ragged rows, non-numeric cells,
NaN or infinity, no rows) stops the command with one line naming the line and field (text) or the row and column
(arrays, counted from 0) and exit status 2. Outputs are written to a temporary name in the same folder and renamed
when complete, so a failure never leaves a partial file.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import time
import zipfile
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .._files import atomic_write
from ._arrays import _npy_layout, rows_per_chunk

EXIT_BAD_INPUT = 2


class InputError(ValueError):
    """A problem with an input file, reported as one line."""


# ------------------------------------------------------------------------------------------------ reading


class NpyRows:
    """The rows of a 2-D ``.npy`` file as ``(X chunk, y chunk)`` pairs read with plain file reads, the label column
    (if any) split off, every chunk checked for NaN / inf; iterable again and again (a reiterable chunk source of
    :mod:`fastdistill.data`)."""

    def __init__(self, path: str, labels: Optional[str], chunk_rows: Optional[int], progress: bool):
        self.path = path
        try:
            shape, self.dtype, self.offset = _npy_layout(path)
        except ValueError as exc:
            raise InputError(str(exc).replace("X: ", "", 1)) from None
        if len(shape) != 2:
            raise InputError(f"{path}: holds an array of shape {shape}; expected 2-D (samples, features)")
        if self.dtype.kind not in "biuf":
            raise InputError(f"{path}: holds {self.dtype} values; expected numbers")
        self.n_rows, self.n_cols = shape
        if self.n_rows == 0 or self.n_cols == 0:
            raise InputError(f"{path}: is empty (shape {shape})")
        self.label_col = _label_column(labels, None, self.n_cols)
        self.rows = rows_per_chunk(self.n_cols, self.dtype.itemsize, chunk_rows)
        self.progress = progress
        self.label: Optional[str] = None

    @property
    def n_features(self) -> int:
        return self.n_cols - (self.label_col is not None)

    def __iter__(self) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray]]]:
        from ._arrays import _file_rows

        chunks = _file_rows(self.path, self.offset, self.dtype, self.n_rows, self.n_cols, self.rows)
        with _bar(self.label, self.n_rows, self.progress) as bar:
            for i, chunk in enumerate(chunks):
                x = chunk.astype(np.float32, copy=False)
                if not np.isfinite(x.sum(dtype=np.float64)):  # (no mask the size of the chunk unless needed)
                    bad = np.argwhere(~np.isfinite(x))
                    if len(bad):
                        r, c = bad[0]
                        raise InputError(f"{self.path}: row {i * self.rows + r}, column {c} is {x[r, c]}; expected "
                                         "finite numbers")
                y = None
                if self.label_col is not None:
                    y = x[:, self.label_col].copy()
                    x = np.delete(x, self.label_col, axis=1)
                bar(len(x))
                yield x, y

    def labels(self) -> Optional[np.ndarray]:
        """The label column, read in one pass (labels are small)."""
        if self.label_col is None:
            return None
        return _integral(np.concatenate([y for _, y in self]))


@contextlib.contextmanager
def _bar(label: Optional[str], total: int, enabled: bool):
    """A tqdm progress bar on stderr (when tqdm is installed and ``enabled``): yields ``update(rows)``."""
    if not enabled or label is None:
        yield lambda k: None
        return
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        yield lambda k: None
        return
    with tqdm(total=total, desc=label, unit="rows", unit_scale=True, file=sys.stderr, leave=False) as bar:
        yield bar.update


class Mapped:
    """A chunk source seen through a fitted transform, chunk by chunk (iterable again like its source)."""

    def __init__(self, source: Any, fn: Any):
        self.source, self.fn = source, fn
        self.n_rows = source.n_rows

    def __iter__(self) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray]]]:
        for x, y in self.source:
            yield self.fn(x), y


def _root(source: Any) -> NpyRows:
    while isinstance(source, Mapped):
        source = source.source
    return source


def _text_rows(path: str) -> Tuple[List[List[str]], str]:
    delimiter = "," if path.lower().endswith(".csv") else None
    with open(path, newline="") as fh:
        if delimiter:
            rows = [r for r in csv.reader(fh, delimiter=delimiter)]
        else:
            rows = [line.split() for line in fh]
    return rows, "field"


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def read_text(path: str, labels: Optional[str]) -> Tuple[np.ndarray, Optional[np.ndarray], List[str]]:
    """(X float32, labels or None, column names) of a CSV / whitespace text file, with a one-line error naming the
    line and field (1-based) of the first bad cell."""
    rows, _ = _text_rows(path)
    lines = [(i + 1, r) for i, r in enumerate(rows) if r and any(c.strip() for c in r)]
    if not lines:
        raise InputError(f"{path}: no data rows")
    header = None
    if not all(_is_number(c) for c in lines[0][1]):
        header = [c.strip() for c in lines[0][1]]
        lines = lines[1:]
        if not lines:
            raise InputError(f"{path}: a header line but no data rows")
    width = len(header) if header else len(lines[0][1])
    label_col = _label_column(labels, header, width)
    X = np.empty((len(lines), width - (label_col is not None)), dtype=np.float32)
    y: List[str] = []
    for r, (lineno, cells) in enumerate(lines):
        if len(cells) != width:
            raise InputError(f"{path}: line {lineno} has {len(cells)} fields, expected {width} (ragged rows)")
        values = []
        for j, cell in enumerate(cells):
            if j == label_col:
                y.append(cell.strip())
                continue
            try:
                v = float(cell)
            except ValueError:
                raise InputError(f"{path}: line {lineno}, field {j + 1}: {cell.strip()!r} is not a number") from None
            if not np.isfinite(v):
                raise InputError(f"{path}: line {lineno}, field {j + 1}: {cell.strip()!r} is not a finite number")
            values.append(v)
        X[r] = values
    names = [n for j, n in enumerate(header or [f"x{j}" for j in range(width)]) if j != label_col]
    return X, (_as_labels(y) if label_col is not None else None), names


def _label_column(labels: Optional[str], header: Optional[List[str]], width: int) -> Optional[int]:
    if labels is None:
        return None
    if header and labels in header:
        return header.index(labels)
    try:
        col = int(labels)
    except ValueError:
        raise InputError(f"--labels: no column named {labels!r}" + (f" (columns: {header})" if header else "")) \
            from None
    col = col + width if col < 0 else col
    if not 0 <= col < width:
        raise InputError(f"--labels: column {labels} does not exist ({width} columns)")
    return col


def _as_labels(values: List[str]) -> np.ndarray:
    """Class labels as numbers when they all are (integers when integral), else as strings."""
    try:
        nums = np.array([float(v) for v in values])
    except ValueError:
        return np.array(values)
    return _integral(nums)


def _integral(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int64) if a.dtype.kind == "f" and np.all(a == np.round(a)) else a


def read_npz(path: str, labels: Optional[str]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    with z:
        two_d = [k for k in z.files if z[k].ndim == 2]
        key = "X" if "X" in z.files else ("x" if "x" in z.files else (two_d[0] if len(two_d) == 1 else None))
        if key is None:
            raise InputError(f"{path}: no array named 'X' and not exactly one 2-D array (arrays: {z.files})")
        X = np.asarray(z[key])
        y = None
        if labels is not None:
            if labels in z.files:
                y = np.asarray(z[labels])
            else:
                col = _label_column(labels, None, X.shape[1] if X.ndim == 2 else 0)
                y, X = X[:, col].copy(), np.delete(X, col, axis=1)
    return _check_array(path, key, X), y


def _check_array(path: str, key: str, X: np.ndarray) -> np.ndarray:
    if X.ndim != 2:
        raise InputError(f"{path}: array {key!r} has shape {X.shape}; expected 2-D (samples, features)")
    if X.dtype.kind not in "biuf":
        raise InputError(f"{path}: array {key!r} holds {X.dtype} values; expected numbers")
    if X.size == 0:
        raise InputError(f"{path}: array {key!r} is empty (shape {X.shape})")
    X = X.astype(np.float32, copy=False)
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputError(f"{path}: array {key!r} row {r}, column {c} is {X[r, c]}; expected finite numbers")
    return X


# ------------------------------------------------------------------------------------------------ writing


def write_npz(path: str, arrays: Dict[str, Any]) -> None:
    """An uncompressed ``.npz`` (``np.load`` reads it) written entry by entry; an entry is an array, or a
    ``(chunks, shape, dtype)`` triple written chunk by chunk (bounded memory)."""
    atomic_write(path, lambda tmp: _write_npz_entries(tmp, arrays))


def _write_npz_entries(path: str, arrays: Dict[str, Any]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            chunks, shape, dtype = value if isinstance(value, tuple) else ([value], value.shape, value.dtype)
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_2_0(
                    fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                         "shape": tuple(shape)})
                written = 0
                for c in chunks:
                    c = np.ascontiguousarray(c, dtype=dtype)
                    fh.write(c.tobytes())
                    written += len(c)
                if written != shape[0]:
                    raise RuntimeError(f"{name}: wrote {written} rows, expected {shape[0]}")


def write_json(path: str, obj: Any) -> None:
    text = json.dumps(obj, indent=1, default=_json_default) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


# ------------------------------------------------------------------------------------------------ compress


def _plan(args: argparse.Namespace) -> List[Tuple[str, Any]]:
    from .cluster import ClusterCompressor
    from .pca import PCACompressor
    from .quantize import DataQuantizer
    from .select import FeatureSelector

    steps: List[Tuple[str, Any]] = []
    if args.select:
        method, _, k = args.select.partition(":")
        if not k.isdigit():
            raise InputError(f"--select: expected METHOD:K such as mutual_info:20, got {args.select!r}")
        steps.append(("select", FeatureSelector(method, int(k), chunk_rows=args.chunk_rows)))
    if args.pca is not None:
        steps.append(("pca", PCACompressor(int(args.pca) if args.pca >= 1 else args.pca, chunk_rows=args.chunk_rows)))
    if args.clusters is not None:
        count = int(args.clusters) if args.clusters >= 1 else args.clusters
        steps.append(("clusters", ClusterCompressor(count, method=args.cluster_method, random_state=0,
                                                    chunk_rows=args.chunk_rows)))
    if args.quantize is not None:
        steps.append(("quantize", DataQuantizer(args.quantize, args.scheme, chunk_rows=args.chunk_rows)))
    if not steps:
        raise InputError("nothing to do: give at least one of --select, --pca, --clusters, --quantize")
    return steps


ERROR_ROWS = 32768  # rows the reconstruction errors of streamed steps are measured on (the first ones)


def _sample_rows(source: Any, limit: int = ERROR_ROWS) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    xs, ys, got = [], [], 0
    for x, y in source:
        xs.append(x[:limit - got])
        ys.append(None if y is None else y[:limit - got])
        got += len(xs[-1])
        if got >= limit:
            break
    return np.concatenate(xs), (None if ys[0] is None else np.concatenate(ys))


def _error(step: Any, x: np.ndarray) -> Dict[str, float]:
    """Reconstruction error of one step on the rows x."""
    from .cluster import ClusterCompressor
    from .pipeline import _rmse

    if isinstance(step, ClusterCompressor):
        back = step.transform(x)
    else:
        back = step.inverse_transform(step.transform(x))
    rmse, rel = _rmse(x, back)
    return {"rmse": rmse, "relative_rmse": rel}


def compress(args: argparse.Namespace) -> int:
    from ._persist import save
    from .cluster import ClusterCompressor
    from .quantize import DataQuantizer

    steps = _plan(args)
    t_start = time.perf_counter()
    path = args.input
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    progress = not args.quiet and sys.stderr.isatty()
    if ext == ".npy":
        src: Any = NpyRows(path, args.labels, args.chunk_rows, progress)
        n_rows, n_features, itemsize = src.n_rows, src.n_features, src.dtype.itemsize
        X, y = src, None
    else:
        if ext == ".npz":
            X, y = read_npz(path, args.labels)
        else:
            X, y, _ = read_text(path, args.labels)
        n_rows, n_features, itemsize = X.shape[0], X.shape[1], X.dtype.itemsize
    streamed = not isinstance(X, np.ndarray)
    records = []
    cur, cy, weight = X, y, None
    for name, step in steps:
        t0 = time.perf_counter()
        if streamed:
            _root(cur).label = name
        rec: Dict[str, Any] = {"step": name, "compressor": repr(step)}
        if isinstance(step, ClusterCompressor):
            step.fit(cur, cy)
            check_rows = _sample_rows(cur)[0] if streamed else cur
            rec.update(_error(step, check_rows))
            xc, yc, wc = step.coreset_
            cur, cy, weight, streamed = xc, yc, wc, False
        else:
            step.fit(cur, cy)
            check_rows = _sample_rows(cur)[0] if streamed else cur
            rec.update(_error(step, check_rows))
            if not isinstance(step, DataQuantizer):
                cur = Mapped(cur, step.transform) if streamed else step.transform(cur)
        rec["error_rows"] = int(len(check_rows))
        rec["seconds"] = time.perf_counter() - t0
        records.append(rec)
    last = steps[-1][1]
    quantizer = last if isinstance(last, DataQuantizer) else None
    out_rows = n_rows if streamed else len(cur)
    if streamed:
        sample = _sample_rows(cur, 1)[0]
        out_cols = sample.shape[1]
        out_dtype = quantizer.code_dtype if quantizer else sample.dtype
        final = Mapped(cur, quantizer.transform) if quantizer else cur
        _root(final).label = "write"
        arrays: Dict[str, Any] = {"X": ((x for x, _ in final), (out_rows, out_cols), out_dtype)}
        if X.label_col is not None:
            arrays["y"] = X.labels()
    else:
        codes = quantizer.transform(cur) if quantizer else cur
        out_cols, out_dtype = codes.shape[1], codes.dtype
        arrays = {"X": codes}
        if cy is not None:
            arrays["y"] = np.asarray(cy)
        if weight is not None:
            arrays["sample_weight"] = weight
    output = args.output
    write_npz(output, arrays)
    model = args.model or os.path.splitext(output)[0] + ".fd"
    save([s for _, s in steps], model)  # (written whole or not at all, as every fastdistill file)
    bytes_before = n_rows * (n_features + (args.labels is not None)) * itemsize
    bytes_after = out_rows * out_cols * np.dtype(out_dtype).itemsize
    report = {"input": path, "output": output, "model": model, "samples_in": n_rows, "features_in": n_features,
              "samples_out": out_rows, "features_out": out_cols, "dtype_out": str(np.dtype(out_dtype)),
              "bytes_before": bytes_before, "bytes_after": bytes_after,
              "ratio": bytes_before / max(bytes_after, 1), "steps": records,
              "seconds": time.perf_counter() - t_start}
    write_json(args.report or os.path.splitext(output)[0] + ".json", report)
    if not args.quiet:
        print(f"{path}: {n_rows} x {n_features} -> {out_rows} x {out_cols} {np.dtype(out_dtype)} "
              f"({report['ratio']:.1f}x smaller) in {report['seconds']:.1f} s; wrote {output}, {model}")
    return 0


# ------------------------------------------------------------------------------------------------ inspect


def _describe(name: str, a: np.ndarray) -> str:
    line = f"  {name}: {a.dtype} {tuple(a.shape)}, {a.nbytes:,} bytes"
    if a.size and a.dtype.kind in "biuf":
        f = a.astype(np.float64, copy=False)
        nan = int(np.isnan(f).sum()) if a.dtype.kind == "f" else 0
        line += f", min {np.nanmin(f):.4g}, max {np.nanmax(f):.4g}, mean {np.nanmean(f):.4g}"
        line += f", {nan} NaN" if nan else ""
    return line


def inspect(args: argparse.Namespace) -> int:
    path = args.file
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        shape, dtype, _ = _npy_layout(path)
        print(f"{path}: .npy, {dtype} {shape}")
        print(_describe("array", np.load(path, mmap_mode="r")))
    elif ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            print(f"{path}: .npz with {len(z.files)} arrays")
            for k in z.files:
                print(_describe(k, z[k]))
    elif ext == ".fd":
        from ._persist import load

        obj = load(path)
        steps = obj if isinstance(obj, list) else [obj]
        print(f"{path}: {len(steps)} fitted compressor(s)")
        for s in steps:
            print(f"  {s!r}")
    elif ext == ".json":
        with open(path) as fh:
            rep = json.load(fh)
        print(json.dumps(rep, indent=1))
    else:
        X, y, names = read_text(path, args.labels)
        print(f"{path}: text, {X.shape[0]} rows x {X.shape[1]} numeric columns" + (" + labels" if y is not None
                                                                                  else ""))
        print(_describe("X", X))
        if y is not None:
            print(f"  labels: {len(np.unique(y))} distinct values")
    return 0


# ------------------------------------------------------------------------------------------------ argparse


def add_parser(sub: Any) -> None:
    """Adds ``data compress`` / ``data inspect`` to the ``fastdistill`` command's subparsers."""
    p = sub.add_parser("data", help="compress data files (PCA, feature selection, k-means coresets, quantization)")
    dsub = p.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("compress", help="compress INPUT (.npy streamed, .npz, .csv, text) into an .npz",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("input")
    c.add_argument("-o", "--output", required=True, help="the .npz to write (X, and y / sample_weight)")
    c.add_argument("--pca", type=float, metavar="FRACTION|COUNT", help="keep this variance fraction or count")
    c.add_argument("--select", metavar="METHOD:K", help="e.g. mutual_info:20, entropy:10, chi2:5, variance:30")
    c.add_argument("--clusters", type=float, metavar="COUNT|FRACTION", help="a k-means coreset of this size")
    c.add_argument("--cluster-method", choices=("kmeans", "minibatch"), default="kmeans")
    c.add_argument("--quantize", type=int, metavar="BITS", help="integer codes of this width (2..8)")
    c.add_argument("--scheme", default="asymmetric", help="asymmetric | symmetric | mean | log | gradient")
    c.add_argument("--labels", metavar="COL", help="the label column (name or index; an array name in .npz)")
    c.add_argument("--model", help="where to save the fitted compressors (default: OUTPUT with .fd)")
    c.add_argument("--report", help="where to write the JSON report (default: OUTPUT with .json)")
    c.add_argument("--chunk-rows", type=int, help="rows per chunk when streaming (default: ~64 MiB)")
    c.add_argument("--quiet", action="store_true", help="no progress bar, no summary line")
    c.set_defaults(fn=run_compress)
    i = dsub.add_parser("inspect", help="shapes, dtypes, sizes and value ranges of FILE (or a .fd model)")
    i.add_argument("file")
    i.add_argument("--labels", metavar="COL", help="the label column of a text file")
    i.set_defaults(fn=run_inspect)


def _guarded(fn: Any, args: argparse.Namespace) -> int:
    try:
        return fn(args)
    except (InputError, ValueError, TypeError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fastdistill data: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT


def run_compress(args: argparse.Namespace) -> int:
    return _guarded(compress, args)


def run_inspect(args: argparse.Namespace) -> int:
    return _guarded(inspect, args)
