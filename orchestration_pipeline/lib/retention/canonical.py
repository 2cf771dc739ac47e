"""One order-independent content hash of a set of rows, computed alike in Postgres and on Arrow.

An archive is proven by recomputing, from the Parquet file alone, the hash Postgres computed over
the rows it exported. Both sides build the same canonical text for every row — the column values
joined by U+001F in column order, NULL written ``\\N`` — with an encoding per column type chosen
so that both produce the very same bytes:

| Postgres type | canonical text                                   | in Parquet                     |
|---------------|--------------------------------------------------|--------------------------------|
| timestamptz   | epoch microseconds, decimal                      | timestamp[us, UTC]             |
| uuid          | lowercase text                                   | string                         |
| text, varchar | as is                                            | string                         |
| int2/4/8      | decimal                                          | int16 / int32 / int64          |
| jsonb         | its ``::text`` form                              | string (that exact text)       |
| float8        | ``float8send`` as 16 lowercase hex digits        | double                         |
| bool          | ``t`` / ``f``                                    | bool                           |
| xid8          | decimal                                          | uint64                         |

A row's hash is the first 16 hex digits of md5(row text) read as a signed 64-bit integer; a set's
hash is (row count, sum of row hashes mod 2^64), so it does not depend on row order and adds up
over Parquet row groups (and over several archives of one day). It detects any changed, missing or
added row with the odds of a 64-bit checksum; it is not a defence against a forger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

SEPARATOR = "\x1f"
NULL_TEXT = "\\N"
_MOD = 1 << 64

#: pg_type.typname -> (SQL canonical text of {col}, SQL selected by the export, Arrow type in Parquet)
_TYPES: dict[str, tuple[str, str, pa.DataType]] = {
    "timestamptz": (
        "(extract(epoch FROM {col}) * 1000000)::bigint::text",
        "(extract(epoch FROM {col}) * 1000000)::bigint",
        pa.timestamp("us", tz="UTC"),
    ),
    "uuid": ("{col}::text", "{col}", pa.string()),
    "text": ("{col}", "{col}", pa.string()),
    "varchar": ("{col}::text", "{col}", pa.string()),
    "int2": ("{col}::text", "{col}", pa.int16()),
    "int4": ("{col}::text", "{col}", pa.int32()),
    "int8": ("{col}::text", "{col}", pa.int64()),
    "jsonb": ("{col}::text", "{col}", pa.string()),
    "float8": ("encode(float8send({col}), 'hex')", "{col}", pa.float64()),
    "bool": ("CASE WHEN {col} THEN 't' WHEN NOT {col} THEN 'f' END", "{col}", pa.bool_()),
    "xid8": ("{col}::text", "{col}", pa.uint64()),
}
#: What the export's CSV carries for each Arrow type before it is cast (timestamps come as integers).
_CSV_TYPE = {pa.timestamp("us", tz="UTC"): pa.int64()}


@dataclass(frozen=True)
class Column:
    """One column of an archived table: its name and its ``pg_type.typname``."""

    name: str
    pg_type: str

    @property
    def arrow_type(self) -> pa.DataType:
        return _TYPES[self.pg_type][2]

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.pg_type}


@dataclass(frozen=True)
class ContentHash:
    """The order-independent hash of a set of rows: how many, and the sum of their row hashes."""

    rows: int
    value: int  # signed 64-bit

    def __add__(self, other: ContentHash) -> ContentHash:
        return ContentHash(self.rows + other.rows, to_signed(self.value + other.value))

    @classmethod
    def empty(cls) -> ContentHash:
        return cls(0, 0)


def to_signed(total: int) -> int:
    """``total`` mod 2^64, as the signed 64-bit integer Postgres stores in a bigint."""
    total %= _MOD
    return total - _MOD if total >= 1 << 63 else total


def table_columns(conn: psycopg.Connection, relation: str) -> list[Column]:
    """The columns of ``relation`` in their table order; a type without a canonical encoding is an error."""
    rows = conn.execute(
        """SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
           WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        (relation,),
    ).fetchall()
    if not rows:
        raise ValueError(f"relation {relation} does not exist or has no columns")
    columns = [Column(name, typ) for name, typ in rows]
    unknown = [f"{c.name} ({c.pg_type})" for c in columns if c.pg_type not in _TYPES]
    if unknown:
        raise ValueError(
            f"{relation} has columns of a type the archive cannot encode: {', '.join(unknown)} — add an "
            "encoding for the type to lib/retention/canonical.py (both the SQL and the Arrow side)"
        )
    return columns


def columns_from_dicts(items: Iterable[dict]) -> list[Column]:
    """The columns a manifest recorded (``[{"name": ..., "type": ...}, ...]``)."""
    return [Column(item["name"], item["type"]) for item in items]


def require_utf8(conn: psycopg.Connection) -> None:
    """Postgres hashes text in the server encoding and Arrow in UTF-8: they agree only on a UTF-8 server."""
    encoding = conn.execute("SHOW server_encoding").fetchone()[0]
    if encoding.upper() not in ("UTF8", "UTF-8"):
        raise ValueError(
            f"the server encoding is {encoding}: archives are hashed as UTF-8 text, so retention needs a "
            "UTF8 database — archive from a UTF8 copy of the database"
        )


def row_text_sql(columns: Sequence[Column]) -> sql.Composable:
    """The SQL expression of a row's canonical text."""
    parts = [
        sql.SQL("coalesce({}, {})").format(
            sql.SQL(_TYPES[c.pg_type][0]).format(col=sql.Identifier(c.name)), sql.Literal(NULL_TEXT)
        )
        for c in columns
    ]
    return sql.SQL("concat_ws(chr(31), {})").format(sql.SQL(", ").join(parts))


def row_hash_sql(columns: Sequence[Column]) -> sql.Composable:
    """The SQL expression of a row's hash: md5's first 16 hex digits as a signed bigint."""
    return sql.SQL("('x' || left(md5({}), 16))::bit(64)::bigint").format(row_text_sql(columns))


def select_list_sql(columns: Sequence[Column]) -> sql.Composable:
    """What the export selects: every column, timestamps as epoch microseconds (exact, fast to parse)."""
    return sql.SQL(", ").join(
        sql.SQL(_TYPES[c.pg_type][1]).format(col=sql.Identifier(c.name)) for c in columns
    )


def pg_hash_by_group(
    conn: psycopg.Connection,
    source: sql.Composable,
    columns: Sequence[Column],
    group_by: str | None = None,
    where: sql.Composable | None = None,
    params: Sequence | None = None,
) -> dict[str | None, ContentHash]:
    """The content hash of the rows of ``source`` computed inside Postgres, in one scan, per value of
    ``group_by`` (one entry, key None, without it)."""
    key = sql.Identifier(group_by) if group_by else sql.SQL("NULL::text")
    query = sql.SQL("SELECT {key}, count(*), coalesce(sum({h}), 0) FROM {src}{where} GROUP BY 1").format(
        key=key,
        h=row_hash_sql(columns),
        src=source,
        where=sql.SQL(" WHERE ") + where if where is not None else sql.SQL(""),
    )
    groups = {k: ContentHash(int(n), to_signed(int(total))) for k, n, total in conn.execute(query, params)}
    return groups


def total(groups: dict[str | None, ContentHash]) -> ContentHash:
    result = ContentHash.empty()
    for value in groups.values():
        result = result + value
    return result


# --- the Arrow side ------------------------------------------------------------------------------


def arrow_schema(columns: Sequence[Column], metadata: dict[str, str] | None = None) -> pa.Schema:
    """The typed Parquet schema of an archive (a notebook reads it as is)."""
    fields = [pa.field(c.name, c.arrow_type, metadata={"pg_type": c.pg_type}) for c in columns]
    return pa.schema(fields, metadata=metadata)


def csv_column_types(columns: Sequence[Column]) -> dict[str, pa.DataType]:
    """The types the export's CSV is parsed into (timestamps arrive as epoch microseconds)."""
    return {c.name: _CSV_TYPE.get(c.arrow_type, c.arrow_type) for c in columns}


def to_archive_types(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    """A parsed CSV batch cast to the archive's schema (epoch microseconds become timestamps)."""
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    arrays = [table.column(f.name).cast(f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _float_hex(array: pa.Array) -> pa.Array:
    """float8send's big-endian bytes of each double as 16 lowercase hex digits (nulls stay null)."""
    values = array.fill_null(0.0).to_numpy(zero_copy_only=False).astype(">f8")
    digits = np.frombuffer(b"0123456789abcdef", dtype="S1")
    raw = values.view(np.uint8).reshape(-1, 8)
    hexed = np.empty((len(values), 16), dtype="S1")
    hexed[:, 0::2] = digits[raw >> 4]
    hexed[:, 1::2] = digits[raw & 0x0F]
    text = pa.array(hexed.view("S16").ravel(), type=pa.binary(16)).cast(pa.string())
    return pc.if_else(array.is_valid(), text, pa.scalar(None, pa.string()))


def _canonical_text(array: pa.Array, column: Column) -> pa.Array:
    """One column's canonical text, as :func:`row_text_sql` writes it for the same values."""
    typ = column.arrow_type
    if pa.types.is_timestamp(typ):
        text = array.cast(pa.int64()).cast(pa.string())
    elif pa.types.is_floating(typ):
        text = _float_hex(array)
    elif pa.types.is_boolean(typ):
        text = pc.if_else(array, pa.scalar("t"), pa.scalar("f"))
    elif pa.types.is_string(typ):
        text = array
    else:  # integers
        text = array.cast(pa.string())
    return text.fill_null(NULL_TEXT)


def arrow_hash(table: pa.Table | pa.RecordBatch, columns: Sequence[Column]) -> ContentHash:
    """The content hash of ``table``'s rows (columns looked up by name, in ``columns`` order)."""
    if table.num_rows == 0:
        return ContentHash.empty()
    if isinstance(table, pa.Table):
        table = table.combine_chunks()
        arrays = [table.column(c.name).chunk(0) for c in columns]
    else:
        arrays = [table.column(c.name) for c in columns]
    texts = [_canonical_text(a, c) for a, c in zip(arrays, columns, strict=True)]
    joined = pc.binary_join_element_wise(*texts, SEPARATOR)
    return ContentHash(len(joined), _sum_row_hashes(joined))


def _sum_row_hashes(joined: pa.Array) -> int:
    """Sum (mod 2^64) of md5's first 8 bytes, big-endian signed, of every string in ``joined``."""
    if pa.types.is_large_string(joined.type):
        offset_type = np.int64
    else:
        offset_type = np.int32
    _validity, offsets_buffer, data_buffer = joined.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[
        joined.offset : joined.offset + len(joined) + 1
    ]
    data = memoryview(data_buffer) if data_buffer is not None else memoryview(b"")
    md5 = hashlib.md5
    bounds = offsets.tolist()
    digests = b"".join([md5(data[a:b]).digest() for a, b in pairwise(bounds)])
    row_hashes = np.frombuffer(digests, dtype=">i8")[::2].astype(np.int64)
    # numpy's integer sum wraps modulo 2^64, which is the sum this hash is defined by
    return to_signed(int(row_hashes.view(np.uint64).sum(dtype=np.uint64)))
