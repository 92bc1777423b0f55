"""From an input row (a dict) to a `Prompt`: id, contents and kept columns, or the reason it cannot be sent."""

from __future__ import annotations

import base64
import difflib
import mimetypes
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchgen.gemini.request import user_contents
from batchgen.records import Prompt


@dataclass(frozen=True, slots=True)
class PromptBuilder:
    """Turns rows into prompts following a job's [input] section.

    The prompt comes from, in order: the row's `contents_field` (Gemini contents JSON, sent as is), else
    `prompt_template` rendered with the row, else the row's `prompt_field`.
    """

    id_field: str | None = None
    prompt_template: str | None = None
    prompt_field: str | None = None
    contents_field: str = "contents"
    keep_columns: Sequence[str] = ()
    # Multimodal rows: a local file sent as inlineData (relative paths against `media_root`), or a URI sent as
    # fileData; the MIME type comes from `mime_field` or the file name.
    media_field: str | None = None
    media_uri_field: str | None = None
    mime_field: str | None = None
    media_root: Path | None = None
    _template_fields: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = () if self.prompt_template is None else template_fields(self.prompt_template)
        object.__setattr__(self, "_template_fields", names)

    def missing_columns(self, columns: Sequence[str]) -> list[tuple[str, str]]:
        """What the job names that the input's `columns` lack, as (job key, why): the id field, the columns
        the template or prompt field read (or a prompt source at all), kept and media columns.

        Rows carrying `contents_field` need no prompt column; when none of them does, the prompt must come
        from somewhere else.
        """
        have = set(columns)
        named: list[tuple[str, str]] = []
        if self.id_field is not None:
            named.append(("input.id_field", self.id_field))
        if self.contents_field not in have:
            if self.prompt_template is not None:
                named.extend(("input.prompt_template", name) for name in self._template_fields)
            elif self.prompt_field is not None:
                named.append(("input.prompt_field", self.prompt_field))
            else:
                return [
                    (
                        "input",
                        f"no prompt: set prompt_template or prompt_field, or give the rows a "
                        f"{self.contents_field!r} column (Gemini contents)",
                    )
                ]
        named.extend(("output.keep_columns", name) for name in self.keep_columns)
        for key, name in (
            ("input.media_field", self.media_field),
            ("input.media_uri_field", self.media_uri_field),
            ("input.mime_field", self.mime_field),
        ):
            if name is not None:
                named.append((key, name))
        return [(key, f"no column {name!r}{_closest(name, columns)}") for key, name in named if name not in have]

    def build(self, row: Any, index: int, file: str, locator: str) -> Prompt:
        """The prompt for row number `index` (0-based), found in `file` at `locator` ("line:12", "row:7")."""
        if not isinstance(row, Mapping):
            return unusable(file, locator, f"row is a JSON {type(row).__name__}, not an object", index)
        row_id = self._row_id(row, index)
        where = _where(file, locator)
        if row_id is None:
            return unusable(file, locator, f"id field {self.id_field!r} is missing or not a string/integer", index)
        keep = {name: row.get(name) for name in self.keep_columns}
        try:
            contents = self._contents(row)
        except ValueError as exc:
            return Prompt(id=row_id, where=where, contents=b"", keep=keep, problem=str(exc), index=index)
        return Prompt(id=row_id, where=where, contents=contents, keep=keep, index=index)

    def _row_id(self, row: Mapping[str, Any], index: int) -> str | None:
        if self.id_field is None:
            return str(index)
        value = row.get(self.id_field)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            return None
        return str(value)

    def _contents(self, row: Mapping[str, Any]) -> bytes:
        contents = row.get(self.contents_field)
        if contents is not None:
            return _contents_json(contents, self.contents_field)
        if self.prompt_template is not None:
            text = self._render(row)
        elif self.prompt_field is not None:
            value = row.get(self.prompt_field)
            if not isinstance(value, str):
                raise ValueError(f"prompt field {self.prompt_field!r} is missing or not a string")
            text = value
        else:
            raise ValueError(f"row has no {self.contents_field!r} field and the job sets no prompt")
        if not text.strip():
            raise ValueError("prompt is empty")
        return user_contents(text, self._media(row))

    def _media(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if self.media_field is not None and row.get(self.media_field) is not None:
            path = Path(str(row[self.media_field]))
            if not path.is_absolute() and self.media_root is not None:
                path = self.media_root / path
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read media file {path}: {exc.strerror or exc}") from exc
            inline = {"mimeType": self._mime(row, path.name), "data": base64.b64encode(data).decode("ascii")}
            parts.append({"inlineData": inline})
        if self.media_uri_field is not None and row.get(self.media_uri_field) is not None:
            uri = str(row[self.media_uri_field])
            parts.append({"fileData": {"mimeType": self._mime(row, uri), "fileUri": uri}})
        return parts

    def _mime(self, row: Mapping[str, Any], name: str) -> str:
        given = row.get(self.mime_field) if self.mime_field is not None else None
        mime = given if isinstance(given, str) and given else mimetypes.guess_type(name)[0]
        if mime is None:
            raise ValueError(f"no MIME type for {name!r}: add a {self.mime_field or 'mime_field'} column")
        return mime

    def _render(self, row: Mapping[str, Any]) -> str:
        missing = [name for name in self._template_fields if row.get(name) is None]
        if missing:
            raise ValueError(f"prompt_template needs field(s) {missing}, missing or null in this row")
        try:
            return self.prompt_template.format_map(row)  # type: ignore[union-attr]
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(f"prompt_template cannot be rendered: {exc}") from exc


def template_fields(template: str) -> tuple[str, ...]:
    """The columns a prompt template names, in order (`{review}`, `{meta.lang}` names `meta`).

    Raises ValueError saying what is wrong with a template that cannot be rendered with a row: an unclosed or
    stray brace, or a field without a column name (`{}`, `{0}`).
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{exc} (write {{{{ and }}}} for a literal brace)") from None
    names: list[str] = []
    for _, name, _, conversion in parsed:
        if name is None:
            continue
        if conversion not in (None, "r", "s", "a"):
            raise ValueError(f"{{{name}!{conversion}}}: unknown conversion !{conversion} (only !r, !s, !a)")
        column = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not column or column.isdigit():
            raise ValueError(f"{{{name}}} names no column: put a column name inside the braces, like {{review}}")
        names.append(column)
    return tuple(dict.fromkeys(names))


def _closest(name: str, columns: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(columns), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unusable(file: str, locator: str, problem: str, index: int | None = None) -> Prompt:
    """A row whose id cannot be read: its locator is its id, so it is still reported exactly once."""
    return Prompt(id=locator, where=_where(file, locator), contents=b"", problem=problem, index=index)


def _where(file: str, locator: str) -> str:
    kind, number = locator.rsplit(":", 2)[-2:]  # "line:12", or "name.jsonl:line:12" in a folder
    return f"{file} {kind} {number}"


def _contents_json(contents: Any, name: str) -> bytes:
    # Parquet often stores nested JSON as a string column; accept both forms.
    if isinstance(contents, str | bytes):
        try:
            contents = orjson.loads(contents)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{name!r} is not valid JSON: {exc}") from exc
    if isinstance(contents, Mapping):
        contents = [contents]
    if not isinstance(contents, list) or not contents or not all(isinstance(c, Mapping) for c in contents):
        raise ValueError(f"{name!r} must be a non-empty list of Content objects")
    return orjson.dumps(contents)
