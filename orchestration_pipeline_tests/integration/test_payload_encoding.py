"""Payloads written by msgspec are stored as the same jsonb as when written by json.dumps."""

import json

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestration_pipeline.lib.events import encode_payload

pytestmark = pytest.mark.db

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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(payloads, min_size=1, max_size=25))
def test_stored_jsonb_is_the_same(fresh_dsn, batch):
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute(
            "SELECT a::jsonb::text, b::jsonb::text, a::jsonb = b::jsonb "
            "FROM unnest(%s::text[], %s::text[]) AS t(a, b)",
            ([json.dumps(p) for p in batch], [encode_payload(p) for p in batch]),
        ).fetchall()
    for (before, after, equal), payload in zip(rows, batch, strict=True):
        assert before == after and equal, payload
