"""Building blocks for synthetic secrets: alphabets, random strings and the documented checksums.

Every generator draws from a ``random.Random`` passed in, so a corpus built from one seed is the
same on every run and every machine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import string
import uuid
import zlib

DIGITS = string.digits
HEX = "0123456789abcdef"
UPPER_HEX = HEX.upper()
UPPER_ALNUM = string.ascii_uppercase + DIGITS
ALNUM = string.ascii_letters + DIGITS
BASE62 = DIGITS + string.ascii_uppercase + string.ascii_lowercase  # the digit order of base62 numbers
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
AWS_ID = string.ascii_uppercase + "234567"  # the base32 alphabet AWS key ids use after the prefix
# Symbols a real password may hold; none is a JSON escape, so a value reads the same in a raw line.
PASSWORD_SYMBOLS = "!#%&+,-.:;=?@^_~}"
URL_SAFE_SYMBOLS = "-._~!*"


def rand(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def rand_bytes(rng: random.Random, length: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(length))


def rand_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def password(rng: random.Random, alphabet_symbols: str = PASSWORD_SYMBOLS, length: int | None = None) -> str:
    """A password: letters and digits with two or more symbols inside (never first, never last)."""
    size = length or rng.randint(14, 24)
    chars = [rng.choice(ALNUM) for _ in range(size)]
    for _ in range(rng.randint(2, 4)):
        chars[rng.randrange(1, size - 1)] = rng.choice(alphabet_symbols)
    return "".join(chars)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rem = divmod(number, 62)
        digits.append(BASE62[rem])
    return "".join(reversed(digits)).rjust(width, "0")


def crc32_base62(body: str) -> str:
    """The 6-character checksum GitHub (and npm) put after the random part: CRC32, base62."""
    return base62(zlib.crc32(body.encode()), 6)


def crc32_hex(body: str) -> str:
    """Grafana service account tokens end with the CRC32 of what precedes it, as 8 hex digits."""
    return f"{zlib.crc32(body.encode()):08x}"


def crc24(data: bytes) -> int:
    """The OpenPGP armor checksum (RFC 4880, section 6.1)."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32_polymod(values: list[int]) -> int:
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            check ^= generator[i] if (top >> i) & 1 else 0
    return check


def bech32(hrp: str, data: bytes) -> str:
    """BIP-173 bech32 of ``data`` (used by age for its secret keys), lowercase."""
    acc, bits, groups = 0, 0, []
    for byte in data:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            groups.append((acc >> bits) & 31)
    if bits:
        groups.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _bech32_polymod(expanded + groups + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(BECH32[g] for g in groups + checksum)


def bech32_valid(text: str) -> bool:
    hrp, _, data = text.lower().rpartition("1")
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    return _bech32_polymod(expanded + [BECH32.index(c) for c in data]) == 1


_SIGNATURE_BYTES = {"RS256": 256, "ES256": 64, "EdDSA": 64}


def jwt(rng: random.Random, alg: str = "HS256") -> tuple[str, str, str]:
    """A JWT as its three parts (header, claims, signature): HS256 is signed with a random key,
    other algorithms get random bytes of their signature's size."""
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {
        "sub": rand_uuid(rng),
        "iss": rng.choice(["https://auth.example.com", "api", "https://login.example.org/tenant"]),
        "iat": rng.randint(1_600_000_000, 1_700_000_000),
        "scope": rng.choice(["read write", "admin", "deploy"]),
        "jti": rand(rng, ALNUM, 16),
    }
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    if alg == "HS256":
        signed = hmac.new(rand_bytes(rng, 32), f"{header}.{body}".encode(), hashlib.sha256).digest()
    else:
        signed = rand_bytes(rng, _SIGNATURE_BYTES[alg])
    signature = b64url(signed)
    return header, body, signature


def wrap(text: str, width: int) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)]
