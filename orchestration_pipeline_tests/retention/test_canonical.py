"""The content hash: Postgres and the Arrow side agree value for value, and it sees every change."""

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from psycopg import sql

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.retention import canonical
from orchestration_pipeline.lib.retention.archive import _csv_options
from orchestration_pipeline.lib.retention.canonical import ContentHash, to_signed

pytestmark = pytest.mark.db

TRICKY_ROWS = """INSERT INTO hashed VALUES
 ('2024-01-01 00:00:00.123456+00', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', E'h\u00e9 "q", \\n\\\\N x', 1, 2, 3,
  '{"b": [1, 2.50, "x\\ny"], "a": null}', 0.1, true, '123', 'v'),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 ('1900-06-01 12:00:00.000001+05', gen_random_uuid(), '', -32768, -2147483648, -9223372036854775808, '{}',
  'NaN', false, '18446744073709551615', ''),
 ('2200-01-01', gen_random_uuid(), 'x', 0, 0, 0, '[]', '-0', false, '0', E'\u00e9'),
 ('2024-01-01', gen_random_uuid(), 'y', 0, 0, 0, '"s"', 'Infinity', true, '0', NULL),
 ('2024-01-01', gen_random_uuid(), 'z', 0, 0, 0, '1e400', '-Infinity', NULL, '0', NULL),
 ('2024-01-01', gen_random_uuid(), 'w', 0, 0, 0, 'null', 5e-324, true, '0', NULL)"""


@pytest.fixture
def hashed(orch_dsn):
    with connection(orch_dsn) as conn:
        conn.execute(
            """CREATE TABLE hashed (a timestamptz, b uuid, c text, d int2, e int4, f int8, g jsonb, h float8,
                                    i bool, j xid8, k varchar(10))"""
        )
        conn.execute(TRICKY_ROWS)
        conn.commit()
        yield conn


def _pg(conn) -> ContentHash:
    columns = canonical.table_columns(conn, "hashed")
    return canonical.total(canonical.pg_hash_by_group(conn, sql.Identifier("hashed"), columns))


def _exported(conn) -> pa.Table:
    """The rows as the export reads them: COPY CSV, parsed and typed like an archive."""
    columns = canonical.table_columns(conn, "hashed")
    buffer = io.BytesIO()
    query = sql.SQL("COPY (SELECT {} FROM hashed) TO STDOUT (FORMAT csv)").format(
        canonical.select_list_sql(columns)
    )
    with conn.cursor() as cur, cur.copy(query) as copy:
        for chunk in copy:
            buffer.write(chunk)
    parsed = pacsv.read_csv(io.BytesIO(buffer.getvalue()), **_csv_options(columns))
    return canonical.to_archive_types(parsed, canonical.arrow_schema(columns))


def test_postgres_and_arrow_compute_the_same_hash(hashed):
    columns = canonical.table_columns(hashed, "hashed")
    table = _exported(hashed)
    assert table.schema.field("a").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("j").type == pa.uint64()
    pg = _pg(hashed)
    assert pg.rows == 7
    assert canonical.arrow_hash(table, columns) == pg


def test_row_texts_agree_one_by_one(hashed):
    """Not only the sums: each row's canonical text is the same bytes on both sides."""
    columns = canonical.table_columns(hashed, "hashed")
    pg_texts = sorted(
        r[0] for r in hashed.execute(sql.SQL("SELECT {} FROM hashed").format(canonical.row_text_sql(columns)))
    )
    table = _exported(hashed)
    arrow_texts = [canonical._canonical_text(table.column(c.name).combine_chunks(), c) for c in columns]
    joined = sorted(pc.binary_join_element_wise(*arrow_texts, canonical.SEPARATOR).to_pylist())
    assert joined == pg_texts
    assert canonical.SEPARATOR.join(["\\N"] * len(columns)) in pg_texts  # the all-NULL row


def test_hash_is_order_independent_and_sees_one_changed_value(hashed):
    columns = canonical.table_columns(hashed, "hashed")
    table = _exported(hashed)
    reversed_rows = table.take(pa.array(range(table.num_rows - 1, -1, -1)))
    assert canonical.arrow_hash(reversed_rows, columns) == canonical.arrow_hash(table, columns)
    before = _pg(hashed)
    hashed.execute("UPDATE hashed SET h = 0 WHERE c = 'x'")  # -0 to 0: the sign bit of one double
    assert _pg(hashed) != before
    assert _pg(hashed).rows == before.rows


def test_null_and_empty_string_hash_differently(hashed):
    before = _pg(hashed)
    hashed.execute("UPDATE hashed SET k = NULL WHERE k = ''")
    assert _pg(hashed) != before


def test_hash_of_rows_adds_up_over_groups(hashed):
    columns = canonical.table_columns(hashed, "hashed")
    groups = canonical.pg_hash_by_group(hashed, sql.Identifier("hashed"), columns, group_by="c")
    assert len(groups) > 3
    assert canonical.total(groups) == _pg(hashed)


def test_unsupported_type_names_the_column_and_the_fix(orch_dsn):
    with connection(orch_dsn) as conn:
        conn.execute("CREATE TABLE odd (a int, b numeric)")
        with pytest.raises(ValueError, match=r"b \(numeric\).*canonical.py"):
            canonical.table_columns(conn, "odd")


def test_to_signed_wraps_like_a_bigint():
    assert to_signed(2**63) == -(2**63)
    assert to_signed(2**64 + 5) == 5
    assert to_signed(-1) == -1
    assert ContentHash(1, 2**63 - 1) + ContentHash(1, 1) == ContentHash(2, -(2**63))
