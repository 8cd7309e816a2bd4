"""Prompt sets: Wen et al.'s jsonl format and the NeMo prompt lists vendored in ``memlib/data/nemo/``
(package data: they ship in the wheel).

- ``load_prompt_jsonl``: one JSON object per line with a ``caption`` (Wen's ``sdv1_500_memorized.jsonl`` also has
  ``index`` and ``url``); every malformed line is reported with the file and line number.
- ``load_nemo_prompts``: Hintersdorf et al.'s (NeurIPS 2024) 500 memorized LAION prompts, labelled VM (verbatim)
  / TM (template) with mean/max SSCD, and their 500 non-memorized LAION prompts. The memorized list holds the
  same 500 prompts, in the same order and with the same LAION indices, as Wen's jsonl (see
  memlib/data/nemo/README.md), so it doubles as a licensed (MIT) copy of Wen's positives.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .paths import package_data_dir

NEMO_LABELS = {"VM": "verbatim", "TM": "template"}
_NEMO_FILES = {"memorized": ("memorized_laion_prompts.csv", ["", "Caption", "URL", "type", "mean_sscd", "max_sscd",
                                                              "Index"]),
               "non_memorized": ("unmemorized_laion_prompts.csv", ["", "Caption", "URL", "Index"])}


class PromptFileError(ValueError):
    """A prompt file is missing or malformed; the message names the file (and the line)."""


def _read_prompt_file(path: str | Path) -> bytes:
    """The file's bytes, or a PromptFileError naming it (an empty name, a folder, a missing or unreadable file)."""
    hint = "give the path of a jsonl file in Wen's format (one {\"caption\": ...} object per line) or 'nemo'"
    if not str(path).strip():
        raise PromptFileError(f"the prompt file name is empty; {hint}")
    path = Path(path).expanduser()
    if path.is_dir():
        raise PromptFileError(f"prompt file {path} is a folder, not a file; {hint}")
    if not path.exists():
        raise PromptFileError(f"prompt file {path} does not exist; {hint}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise PromptFileError(f"prompt file {path} cannot be read ({e.strerror or e})") from None


def jsonl_objects(path: Path, data: bytes, example: str = "caption"):
    """(line number, JSON object) for every non-blank line of ``data``; a line that is not UTF-8, not JSON or not
    an object raises PromptFileError naming ``path`` and the line."""
    for n, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{path}, line {n}"
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise PromptFileError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            reason = e.msg.removesuffix(" at")   # json's "Invalid control character at" names no position itself
            raise PromptFileError(f"{where}: invalid JSON ({reason} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise PromptFileError(f"{where}: expected a JSON object like {{\"{example}\": \"...\"}}, "
                                  f"got a JSON {type(obj).__name__}")
        yield n, obj


def load_prompt_jsonl(path: str | Path, field: str = "caption", records: bool = False) -> list:
    """Prompts from a jsonl file: the ``field`` strings, or (``records=True``) the whole JSON objects.

    Blank lines are skipped; invalid JSON, a missing/non-string/empty ``field``, an empty file, or a path that is
    empty, a folder or missing raise ``PromptFileError`` naming the file.
    """
    data = _read_prompt_file(path)  # before Path(): Path("") would read as the current folder
    path, out = Path(path), []
    for n, obj in jsonl_objects(path, data, field):
        where = f"{path}, line {n}"
        if field not in obj:
            raise PromptFileError(f"{where}: no {field!r} field (fields: {', '.join(map(repr, obj)) or 'none'})")
        text = obj[field]
        if not isinstance(text, str):
            raise PromptFileError(f"{where}: {field!r} is a JSON {type(text).__name__}, expected a string")
        if not text.strip():
            raise PromptFileError(f"{where}: {field!r} is empty")
        out.append(obj if records else text)
    if not out:
        raise PromptFileError(f"no prompts in {path} (the file is empty or has only blank lines)")
    return out


def _float_or_none(s: str) -> float | None:
    return float(s) if s.strip() else None  # 13 TM rows have no SSCD values in the source


def nemo_dir() -> Path:
    """The vendored NeMo prompt lists (package data)."""
    return package_data_dir() / "nemo"


def load_nemo_prompts(kind: str = "memorized", folder: str | Path | None = None) -> list[dict]:
    """NeMo's LAION prompts as records.

    ``kind="memorized"``: 500 dicts with ``prompt``, ``label`` ('VM' verbatim / 'TM' template, as in the source's
    ``type`` column; ``NEMO_LABELS`` spells them out), ``mean_sscd`` and ``max_sscd`` (float, or None where the
    source cell is empty), ``index`` (LAION index), ``url`` and ``row`` (the source's unnamed row number).
    ``kind="non_memorized"``: 500 dicts with ``prompt``, ``index``, ``url``, ``row``.
    """
    if kind not in _NEMO_FILES:
        raise ValueError(f"unknown kind {kind!r}; choose 'memorized' or 'non_memorized'")
    name, columns = _NEMO_FILES[kind]
    path = (Path(folder) if folder is not None else nemo_dir()) / name
    if not path.exists():
        where = ("reinstall memlib: it ships inside the package" if folder is None else
                 "give the folder of a copy")
        raise FileNotFoundError(f"{path} is missing; {where} (memlib/data/nemo/)")
    with open(path, newline="", encoding="utf-8") as f:  # semicolon-separated, written by pandas
        reader = csv.DictReader(f, delimiter=";")
        if reader.fieldnames != columns:
            raise PromptFileError(f"{path}: columns {reader.fieldnames}, expected {columns}")
        out = []
        for r in reader:
            rec = {"prompt": r["Caption"], "index": int(r["Index"]), "url": r["URL"], "row": int(r[""])}
            if kind == "memorized":
                if r["type"] not in NEMO_LABELS:
                    raise PromptFileError(f"{path}, line {reader.line_num}: label {r['type']!r} is not VM or TM")
                rec.update(label=r["type"], mean_sscd=_float_or_none(r["mean_sscd"]),
                           max_sscd=_float_or_none(r["max_sscd"]))
            out.append(rec)
    if not out:
        raise PromptFileError(f"no prompts in {path}")
    return out


def load_prompt_file(spec: str, kind: str = "memorized") -> list[str]:
    """Prompt strings from ``spec``: 'nemo' (the vendored NeMo set of ``kind``) or a jsonl path (Wen's format)."""
    if spec == "nemo":
        return [r["prompt"] for r in load_nemo_prompts(kind)]
    return load_prompt_jsonl(spec)
