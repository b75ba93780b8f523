"""Local json, jsonl and csv data files: found from the recipe, read once with the stdlib before datasets reads them.

datasets' own errors for a bad local file name neither the file nor the line ("An error
occurred while generating the dataset"), and it turns bytes that are not UTF-8 into
garbage without a word; a scan of the file is cheap next to training on it.
"""
from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import datasets

from fastft.errors import UserError


FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv"}


def local_files(task_args: Any, fields: dict[str, str], folder_hint: str, missing_hint: str) -> dict[str, Path]:
    """The recipe's local data files by split, from ``fields`` (split -> field name, e.g. train -> train_file);
    a folder or a missing path is an error that ends with the task's hint."""
    files = {}
    for split, name in fields.items():
        path = getattr(task_args, name)
        if path is None:
            continue
        if Path(path).is_dir():
            raise UserError(f"{name} {path} is a folder; {folder_hint}")
        if not Path(path).is_file():
            raise UserError(f"{name} {path} does not exist; {missing_hint}")
        files[split] = Path(path)
    return files


def file_builder(dataset_name: Optional[str], files: dict[str, Path]) -> Optional[str]:
    """The datasets builder (json or csv) that reads ``files``: dataset_name, else the one their suffixes agree on;
    None when that is neither."""
    suffixes = {FILE_BUILDERS.get(p.suffix.lower()) for p in files.values()}
    builder = dataset_name or (suffixes.pop() if len(suffixes) == 1 else None)
    return builder if builder in ("json", "csv") else None


def json_kind(value: Any) -> str:
    """What a JSON value is, in a user's words."""
    if value is None:
        return "null"
    kinds = ((bool, "true/false"), (str, "text"), ((int, float), "a number"), (list, "a list"), (dict, "an object"))
    return next(name for kind, name in kinds if isinstance(value, kind))


def _lines(path: Path, where: str) -> Iterator[tuple[int, str]]:
    """Decoded lines and their numbers: datasets turns bytes that are not UTF-8 into garbage without a word."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{where} line {number} is not UTF-8 text (byte {raw[err.start]:#04x} at column "
                                f"{err.start + 1}); save the file as UTF-8") from None


def _json_error(where: str, number: int, err: json.JSONDecodeError) -> UserError:
    return UserError(f"{where} line {number} is not valid JSON ({err.msg}, column {err.colno})")


def _json_rows(path: Path, where: str) -> Iterator[tuple[str, Any]]:
    if path.suffix.lower() != ".jsonl":  # one document, unless it turns out to be JSON lines (datasets reads both)
        try:
            document = json.loads("".join(line for _, line in _lines(path, where)))
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":
                raise _json_error(where, err.lineno, err) from None
        else:
            if not isinstance(document, (list, dict)):
                raise UserError(f"{where} holds {json_kind(document)}, not rows: give a list of objects, or one "
                                f"object per line (JSON lines)")
            rows = document if isinstance(document, list) else [document]  # one object is one row to datasets
            yield from ((f"row {number}", row) for number, row in enumerate(rows, 1))
            return
    for number, line in _lines(path, where):
        if line.strip():
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as err:
                raise _json_error(where, number, err) from None


def _csv_rows(path: Path, where: str) -> Iterator[tuple[str, dict]]:
    csv.field_size_limit(2**31 - 1)  # pandas, which datasets reads csv with, has no limit on a field's length
    reader = csv.reader(line for _, line in _lines(path, where))
    try:
        header = next(reader, None)
        if not header or not any(name.strip() for name in header):
            raise UserError(f"{where} line 1 is not a csv header (the column names)")
        twice = sorted({name for name in header if header.count(name) > 1})
        if twice:
            raise UserError(f"{where}: column {twice[0]!r} appears twice in the header")
        for row in reader:
            if not row:  # a blank line, which pandas skips too
                continue
            if len(row) > len(header):
                raise UserError(f"{where} line {reader.line_num} has {len(row)} fields but the header "
                                f"{len(header)}; quote fields that hold a comma")
            # pandas reads an empty field as missing
            yield f"line {reader.line_num}", {name: value or None for name, value in
                                              itertools.zip_longest(header, row)}
    except csv.Error as err:
        raise UserError(f"{where} line {reader.line_num} is not valid csv ({err})") from None


def scan_data_file(field_name: str, path: Path, builder: str,
                   check_row: Optional[Callable[[dict], Optional[str]]] = None) -> list[str]:
    """The columns of a local ``builder`` (json or csv) data file, after reading every row with the stdlib.

    A UserError names the file (and line) when it is a folder, empty, not UTF-8, not valid JSON or csv, or
    when ``check_row`` says what is wrong with a row (None: nothing); then the first such line is named.
    """
    where = f"{field_name} {path}"
    if path.is_dir():
        raise UserError(f"{where} is a folder; give a json, jsonl or csv file")
    if path.stat().st_size == 0:
        raise UserError(f"{where} is empty (0 bytes)")
    columns: dict[str, None] = {}
    count, bad, first = 0, 0, ""
    for label, row in (_csv_rows if builder == "csv" else _json_rows)(path, where):
        if not isinstance(row, dict):
            raise UserError(f"{where} {label} is {json_kind(row)}, not an object of column: value")
        count += 1
        columns.update(dict.fromkeys(row))
        problem = check_row(row) if check_row else None
        if problem:
            bad += 1
            first = first or f"{label}: {problem}"
    if not count:
        raise UserError(f"{where} holds no rows")
    if bad:
        raise UserError(f"{where} {first}" + (f"; {bad} of {count} rows are like it" if bad > 1 else ""))
    return list(columns)


def check_same_columns(scanned: dict[str, list[str]]) -> None:
    """datasets reads all the files as one table: columns that differ fail deep inside it."""
    (first, expected), *others = scanned.items()
    for where, columns in others:
        if set(columns) != set(expected):
            raise UserError(f"{where} has columns {', '.join(columns)} but {first} has {', '.join(expected)}; "
                            f"give every file the same columns")


def root_cause(err: BaseException) -> str:
    """The innermost reason of a library error, on one line: datasets wraps it in 'An error occurred'."""
    seen = set()
    while (err.__cause__ or err.__context__) is not None and id(err) not in seen:
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def load_local(builder: str, files: dict[str, Path], **kwargs: Any) -> datasets.DatasetDict:
    """``datasets.load_dataset`` of scanned local files; what still fails there names the files."""
    try:
        return datasets.load_dataset(builder, data_files={k: str(v) for k, v in files.items()}, **kwargs)
    except (datasets.exceptions.DatasetGenerationError, ValueError, OSError) as err:
        raise UserError(f"datasets could not read {', '.join(map(str, files.values()))} as {builder} "
                        f"({root_cause(err)})") from None
