"""What the parser writes as COPY text is stored exactly as before.

Payloads are written by msgspec rather than json.dumps, and a plain RFC 3339 ``occurred_at`` is
passed on as the producer wrote it rather than as ``str(datetime)``; the server must store the
same values either way.
"""

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestration_pipeline.lib.ingestion.validated import _PLAIN_TIMESTAMP, encode_payload, timestamp_text

pytestmark = pytest.mark.db
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# what a parsed line can hold: no NaN/Infinity, no NUL, no lone surrogates (all quarantined)
text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=10)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1e16, 1e-5, 1.5e300, 5e-324, 100.0, 0.1])
    | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=10,
)
payloads = st.dictionaries(text, values, max_size=4)


@SETTINGS
@given(st.lists(payloads, min_size=1, max_size=25))
def test_stored_payload_jsonb_is_the_same(fresh_dsn, batch):
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute(
            "SELECT a::jsonb::text, b::jsonb::text, c::jsonb::text, a::jsonb = c::jsonb "
            "FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(a, b, c)",
            (
                [json.dumps(p) for p in batch],
                [json.dumps(p, ensure_ascii=False) for p in batch],  # as metric tags were written
                [encode_payload(p) for p in batch],
            ),
        ).fetchall()
    for (before, tags_before, after, equal), payload in zip(rows, batch, strict=True):
        assert before == tags_before == after and equal, payload


@st.composite
def timestamps(draw) -> str:
    """RFC 3339 texts as producers write them, plain or not."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    digits = draw(st.integers(0, 7))
    fraction = f".{moment.microsecond:06d}{draw(st.integers(0, 9))}"[: digits + 1] if digits else ""
    minutes = draw(st.integers(-15 * 60 - 59, 15 * 60 + 59))
    offset = (
        "Z"
        if minutes == 0 and draw(st.booleans())
        else timezone(timedelta(minutes=minutes)).tzname(None)[3:] or "+00:00"
    )
    separator = draw(st.sampled_from(["T", "T", " "]))
    return moment.replace(microsecond=0).isoformat(sep=separator) + fraction + offset


@SETTINGS
@given(st.lists(timestamps(), min_size=1, max_size=25))
def test_plain_timestamps_are_the_same_instant(fresh_dsn, texts):
    moments = [datetime.fromisoformat(t) for t in texts]
    written = [timestamp_text(t, m) for t, m in zip(texts, moments, strict=True)]
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute(
            "SELECT a::timestamptz = b::timestamptz, b::timestamptz FROM unnest(%s::text[], %s::text[]) AS t(a, b)",
            ([str(m) for m in moments], written),
        ).fetchall()
    for (same, stored), moment, text_, out in zip(rows, moments, texts, written, strict=True):
        assert same and stored == moment, (text_, out)
        assert out == (text_ if _PLAIN_TIMESTAMP.fullmatch(text_) else str(moment))
