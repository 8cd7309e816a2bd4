"""Reading a user's prompt files, labelled or not, for ``memlib detect`` / ``generate`` (and ``memlib.detect``).

A spec is a path, optionally with ``@memorized`` or ``@non_memorized`` after it to label every prompt it holds,
or ``nemo`` / ``nemo:memorized`` / ``nemo:non_memorized`` (the NeMo LAION sets shipped in ``memlib/data/nemo/``).

| file | prompts | labels |
|---|---|---|
| ``*.jsonl`` (Wen et al.'s format) | the ``caption`` field (else ``prompt``, else ``text``) | a ``memorized`` or ``label`` field, if any |
| ``*.csv`` / ``*.tsv`` (``,`` ``;`` or tab) | the ``caption`` / ``prompt`` / ``text`` column (any case) | a ``memorized`` / ``label`` column; NeMo's ``type`` (VM/TM) means memorized |
| anything else | one prompt per non-blank line | none |

Every malformed line is reported with the file and its line number.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .prompts import PromptFileError, _read_prompt_file, jsonl_objects, load_nemo_prompts

TEXT_FIELDS = ("caption", "prompt", "text")
LABEL_FIELDS = ("memorized", "label")
LABEL_SUFFIXES = {"memorized": True, "non_memorized": False}
_TRUE = {"1", "true", "yes", "memorized", "mem", "vm", "tm", "positive"}
_FALSE = {"0", "false", "no", "non_memorized", "not_memorized", "nonmem", "negative", "none"}


@dataclass(frozen=True)
class PromptRecord:
    """One prompt, where it came from, and whether it is memorized (None: not known)."""
    text: str
    memorized: bool | None = None
    source: str = ""        # 'file:line'
    kind: str = ""          # a finer label when the file has one (NeMo: VM verbatim / TM template)


def _label(value, where: str) -> bool | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise PromptFileError(f"{where}: label {value!r} is not one of 1/0, true/false, memorized/non_memorized")


def _pick(names, wanted: tuple[str, ...]) -> str | None:
    lower = {str(n).strip().lower(): n for n in names}
    return next((lower[w] for w in wanted if w in lower), None)


def _read_jsonl(path: Path, data: bytes) -> list[PromptRecord]:
    out = []
    for n, obj in jsonl_objects(path, data):
        where = f"{path}, line {n}"
        field = _pick(obj, TEXT_FIELDS)    # per line: a file may mix "caption" and "prompt"
        if field is None:
            raise PromptFileError(f"{where}: no {'/'.join(TEXT_FIELDS)} field (fields: "
                                  f"{', '.join(map(repr, obj)) or 'none'})")
        text = obj[field]
        if not isinstance(text, str) or not text.strip():
            raise PromptFileError(f"{where}: {field!r} must be a non-empty string, got {text!r}")
        lab = _pick(obj, LABEL_FIELDS)
        out.append(PromptRecord(text, _label(obj[lab], where) if lab else None, f"{path.name}:{n}"))
    return out


def _read_table(path: Path, data: bytes) -> list[PromptRecord]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    head = text.split("\n", 1)[0]
    delim = max((";", ",", "\t"), key=head.count)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delim)
    cols = reader.fieldnames or []
    col = _pick(cols, TEXT_FIELDS)
    if col is None:
        raise PromptFileError(f"{path}, line 1: no caption/prompt/text column (columns: {cols})")
    lab, nemo_type = _pick(cols, LABEL_FIELDS), _pick(cols, ("type",))
    out = []
    for row in reader:
        where = f"{path}, line {reader.line_num}"
        if None in row or any(v is None for v in row.values()):
            raise PromptFileError(f"{where}: {len(cols)} columns expected (separator {delim!r})")
        t = row[col]
        if not t.strip():
            raise PromptFileError(f"{where}: the {col!r} cell is empty")
        kind = row[nemo_type].strip() if nemo_type else ""
        if lab:
            memorized = _label(row[lab], where)
        elif nemo_type and kind in ("VM", "TM"):
            memorized = True
        else:
            memorized = None
        out.append(PromptRecord(t, memorized, f"{path.name}:{reader.line_num}", kind))
    return out


def _read_lines(path: Path, data: bytes) -> list[PromptRecord]:
    out = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            raise PromptFileError(f"{path}, line {n}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if line.strip():
            out.append(PromptRecord(line.strip(), None, f"{path.name}:{n}"))
    return out


def _nemo(kind: str) -> list[PromptRecord]:
    return [PromptRecord(r["prompt"], kind == "memorized", f"nemo:{kind}:{r['row']}", r.get("label", ""))
            for r in load_nemo_prompts(kind)]


def read_prompts(spec: str | Path, max_prompts: int = 0) -> list[PromptRecord]:
    """The prompts named by ``spec`` (see the module docstring), the first ``max_prompts`` of each set (0: all)."""
    spec = str(spec)
    if max_prompts < 0:
        raise ValueError(f"max_prompts = {max_prompts}: give 0 (all) or a positive cap")
    cap = (lambda xs: xs[:max_prompts]) if max_prompts else (lambda xs: xs)
    if spec == "nemo":
        return cap(_nemo("memorized")) + cap(_nemo("non_memorized"))
    if spec.startswith("nemo:"):
        kind = spec.split(":", 1)[1]
        if kind not in LABEL_SUFFIXES:
            raise PromptFileError(f"prompt set {spec!r}: use nemo, nemo:memorized or nemo:non_memorized")
        return cap(_nemo(kind))
    forced = None
    if "@" in spec and spec.rsplit("@", 1)[1] in LABEL_SUFFIXES and not Path(spec).exists():
        spec, suffix = spec.rsplit("@", 1)
        forced = LABEL_SUFFIXES[suffix]
    data = _read_prompt_file(spec)
    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    reader = _read_jsonl if suffix in (".jsonl", ".json") else _read_table if suffix in (".csv", ".tsv") \
        else _read_lines
    out = reader(path, data)
    if not out:
        raise PromptFileError(f"no prompts in {path} (the file is empty or has only blank lines)")
    if forced is not None:
        out = [PromptRecord(r.text, forced, r.source, r.kind) for r in out]
    return cap(out)


def read_many(specs, max_prompts: int = 0) -> list[PromptRecord]:
    """``read_prompts`` of each spec, concatenated; a bare string is one spec."""
    specs = [specs] if isinstance(specs, (str, Path)) else list(specs)
    if not specs:
        raise PromptFileError("no prompt file given; pass a file (jsonl, csv or plain text) or 'nemo'")
    return [r for s in specs for r in read_prompts(s, max_prompts)]
