"""A train set the config names (`train_data`: a local JSON file or a hub id) checked before
any row is used: a local file must parse as JSON (one array of rows, or JSON Lines), and every
row must carry the fields its train set's format needs. Errors name the file, the row (counting
from 0) and the field. The config check reads a local file at start-up; the data job checks the
rows it read (a hub dataset's too) before it writes anything."""
from __future__ import annotations

import json
from pathlib import Path

# The LLM-Adapters / Alpaca row every causal train set reads (prepare.build_train_set).
REQUIRED = ("instruction", "output")
OPTIONAL = ("input",)
SUFFIXES = (".json", ".jsonl")
FORMAT = ("a JSON array (or JSON Lines) of objects with string fields 'instruction' and 'output' "
          "('input' optional), the LLM-Adapters / Alpaca format")


class TrainDataError(ValueError):
    pass


def _position(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    return f"line {line} column {pos - (text.rfind(chr(10), 0, pos) + 1) + 1}"


def read_rows(path: str | Path) -> list:
    """A local train file's rows: a JSON array, or one JSON value per line (JSON Lines; what
    `datasets.load_dataset("json")` also reads from a .json file)."""
    path = Path(path).expanduser()
    if path.suffix not in SUFFIXES:
        raise TrainDataError(f"{path}: a {path.suffix or 'suffix-less'} file; allowed values: a "
                             f"{' or '.join(SUFFIXES)} file, {FORMAT}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TrainDataError(f"{path}: not UTF-8 text ({err}); allowed values: {FORMAT}") from err
    start = len(text) - len(text.lstrip())
    if text[start:start + 1] == "[":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise TrainDataError(f"{path}: not valid JSON ({_position(text, err.pos)}: {err.msg}); "
                                 f"allowed values: {FORMAT}") from err
        return rows
    if text[start:start + 1] == "{" and text.strip().count("\n"):
        try:  # one object over several lines (not JSON Lines): named as such below
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise TrainDataError(f"{path}: not valid JSON or JSON Lines (line {number} column {err.colno}: "
                                 f"{err.msg}, row {len(rows)}); allowed values: {FORMAT}") from err
    return rows


def row_problem(row, index: int) -> str | None:
    """What a row lacks for the format, naming its index and the field; None when it is usable."""
    if not isinstance(row, dict):
        return f"row {index} is {type(row).__name__} {json.dumps(row)[:60]}, not an object"
    for field in REQUIRED:
        if field not in row or row[field] is None:
            return f"row {index}: field '{field}' is missing (fields: {', '.join(map(str, row)) or 'none'})"
        if not isinstance(row[field], str):
            return f"row {index}: field '{field}' is {type(row[field]).__name__} {row[field]!r}, not a string"
    if not row["instruction"].strip():
        return f"row {index}: field 'instruction' is blank"
    for field in OPTIONAL:
        if row.get(field) is not None and not isinstance(row[field], str):
            return f"row {index}: field '{field}' is {type(row[field]).__name__} {row[field]!r}, not a string"
    return None


def rows_problem(rows, where: str) -> str | None:
    """The first problem of a train file's rows (`where` names the file or hub id), or None."""
    if not isinstance(rows, list):
        return f"{where}: a JSON {type(rows).__name__}, not an array of rows; allowed values: {FORMAT}"
    if not rows:
        return f"{where}: no rows; allowed values: {FORMAT}"
    for i, row in enumerate(rows):
        problem = row_problem(row, i)
        if problem:
            return f"{where}: {problem}; allowed values: {FORMAT}"
    return None


def file_problem(path: str | Path) -> str | None:
    """A local train file's first problem (not JSON, no rows, a row without a field), or None."""
    try:
        rows = read_rows(path)
    except TrainDataError as err:
        return str(err)
    return rows_problem(rows, str(path))


def check_rows(rows, where: str) -> None:
    problem = rows_problem(rows, where)
    if problem:
        raise TrainDataError(problem)
