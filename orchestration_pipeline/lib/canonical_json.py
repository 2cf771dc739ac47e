"""Canonical JSON as in RFC 8785 (JSON Canonicalization Scheme), for hashing actions.

* Object keys are sorted by their UTF-16 code units; no insignificant whitespace.
* Numbers are IEEE 754 doubles written the way ECMAScript writes them: ``1.0`` → ``1``,
  ``1e21`` → ``1e+21``, ``0.000001`` → ``0.000001``, ``-0.0`` → ``0``. NaN and infinities are
  refused, and so are integers beyond ±(2**53 - 1), which RFC 8785's I-JSON input rules (RFC 7493
  §2.2) do not allow because a double cannot hold them exactly: two different ids would hash alike.
* Strings escape only ``"``, ``\\`` and control characters (``\\n`` etc., else ``\\u00xx``) and are
  otherwise UTF-8. As RFC 8785 §3.1 requires, they are not Unicode-normalised: ``"é"`` composed
  and decomposed are different strings. Lone surrogates are refused.

Example::

    canonical_json({"b": [1.0, "€"], "a": None})  == '{"a":null,"b":[1,"€"]}'
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from orchestration_pipeline.errors import CanonicalJsonError

CANONICALIZER_VERSION = 1  # bump when the output of canonical_json changes for any input
_MAX_SAFE_INTEGER = 2**53 - 1


def _number(value: float) -> str:
    """ECMAScript Number::toString of a finite double (RFC 8785 §3.2.2.3)."""
    if value == 0:
        return "0"  # also -0.0
    sign = "-" if value < 0 else ""
    # repr is the shortest round-tripping digit string, as ECMAScript requires.
    digits_tuple, exponent = Decimal(repr(abs(value))).as_tuple()[1:]
    digits = "".join(map(str, digits_tuple)).rstrip("0")
    exponent += len(digits_tuple) - len(digits)  # account for stripped trailing zeros
    k = len(digits)
    n = exponent + k  # value = 0.digits × 10^n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text


def _string(value: str, where: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJsonError(
            f"{where}: string contains a lone surrogate — send valid Unicode text"
        ) from None
    # json.dumps with ensure_ascii=False escapes exactly what RFC 8785 escapes, the same way.
    return json.dumps(value, ensure_ascii=False)


def _encode(value: Any, where: str, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value, where))
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            raise CanonicalJsonError(
                f"{where}: integer {value} is beyond ±2**53 and not exact in canonical JSON — send it as a string"
            )
        out.append(_number(float(value)))
    elif isinstance(value, float | Decimal):
        if isinstance(value, Decimal) and value.is_nan():
            number = math.nan  # float() of a signalling NaN raises
        else:
            number = float(value)
        if not math.isfinite(number):
            raise CanonicalJsonError(f"{where}: {value} is not a JSON number — send null or a string instead")
        if isinstance(value, Decimal) and Decimal(repr(number)) != value:
            # two different Decimals would otherwise hash alike (0.1 and 0.10000000000000000001)
            raise CanonicalJsonError(
                f"{where}: {value} has no exact IEEE double, which canonical JSON numbers are — send it as a string"
            )
        out.append(_number(number))
    elif isinstance(value, Mapping):
        items = []
        for key in value:
            if not isinstance(key, str):
                raise CanonicalJsonError(f"{where}: object key {key!r} is not a string — use string keys")
            items.append(key)
        # UTF-16 code-unit order: big-endian UTF-16 bytes compare the same way.
        items.sort(key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        out.append("{")
        for i, key in enumerate(items):
            if i:
                out.append(",")
            out.append(_string(key, where))
            out.append(":")
            _encode(value[key], f"{where}/{key}", out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, f"{where}/{i}", out)
        out.append("]")
    else:
        raise CanonicalJsonError(
            f"{where}: {type(value).__name__} is not JSON — convert it to a string, number, list or object first"
        )


def canonical_json(value: Any) -> str:
    """The RFC 8785 canonical form of ``value`` (dicts, lists, str, int, float, bool, None)."""
    out: list[str] = []
    _encode(value, "$", out)
    return "".join(out)


def canonical_sha256(value: Any) -> str:
    """Hex sha256 of the UTF-8 bytes of ``canonical_json(value)``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # \u0000 itself, not an escaped backslash + "u0000"


def json_has_nul(text: str) -> bool:
    """True when JSON text holds a NUL character, which PostgreSQL text and jsonb cannot store:
    raw, or escaped as ``\\u0000`` (but not the six characters of an escaped backslash and ``u0000``)."""
    return "\x00" in text or ("\\u0000" in text and _NUL_ESCAPE.search(text) is not None)
