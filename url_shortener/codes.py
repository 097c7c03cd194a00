"""Short codes: a counter, passed through a keyed permutation, written in base62.

Why not random codes? Random codes need a uniqueness check and a retry on collision, and the
collision rate grows as the space fills. A counter is collision-free by construction; the
permutation (a small Feistel network with cycle-walking) makes consecutive counters land far
apart, so codes cannot be enumerated, while staying a bijection: two counters never share a code.
"""

from __future__ import annotations

import hashlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
CODE_LENGTH = 7
CODE_SPACE = 62**CODE_LENGTH  # 3.5 trillion codes


def encode(n: int, width: int = CODE_LENGTH) -> str:
    """Base62 of a non-negative integer, left-padded with '0' to `width`."""
    if n < 0:
        raise ValueError("cannot encode a negative number")
    chars = []
    while n:
        n, r = divmod(n, 62)
        chars.append(ALPHABET[r])
    return "".join(reversed(chars)).rjust(width, "0")


def decode(s: str) -> int:
    """Inverse of `encode`."""
    n = 0
    for c in s:
        n = n * 62 + _INDEX[c]
    return n


def is_generated_shape(s: str) -> bool:
    """True for strings a generated code could be (exactly CODE_LENGTH base62 characters)."""
    return len(s) == CODE_LENGTH and all(c in _INDEX for c in s)


class FeistelPermutation:
    """A keyed bijection of range(domain), by a balanced Feistel network and cycle-walking."""

    ROUNDS = 4

    def __init__(self, domain: int, key: bytes) -> None:
        if domain < 4:
            raise ValueError("domain too small")
        bits = max(2, (domain - 1).bit_length())
        bits += bits % 2  # balanced halves
        self.domain = domain
        self.half = bits // 2
        self.mask = (1 << self.half) - 1
        self.key = hashlib.sha256(key).digest()[:32]

    def _f(self, round_: int, value: int) -> int:
        digest = hashlib.blake2b(
            value.to_bytes(8, "big"), key=self.key, digest_size=8, person=bytes([round_]) * 16
        ).digest()
        return int.from_bytes(digest, "big") & self.mask

    def _encrypt_block(self, x: int) -> int:
        left, right = x >> self.half, x & self.mask
        for i in range(self.ROUNDS):
            left, right = right, left ^ self._f(i, right)
        return (left << self.half) | right

    def _decrypt_block(self, x: int) -> int:
        left, right = x >> self.half, x & self.mask
        for i in reversed(range(self.ROUNDS)):
            left, right = right ^ self._f(i, left), left
        return (left << self.half) | right

    def forward(self, n: int) -> int:
        """The image of n; cycle-walks until the value falls back inside the domain."""
        if not 0 <= n < self.domain:
            raise ValueError("out of domain")
        x = self._encrypt_block(n)
        while x >= self.domain:
            x = self._encrypt_block(x)
        return x

    def backward(self, n: int) -> int:
        """Inverse of `forward`."""
        if not 0 <= n < self.domain:
            raise ValueError("out of domain")
        x = self._decrypt_block(n)
        while x >= self.domain:
            x = self._decrypt_block(x)
        return x


class CodeGenerator:
    """Turns counter values into 7-character codes: encode(permute(counter))."""

    def __init__(self, secret: str) -> None:
        self.permutation = FeistelPermutation(CODE_SPACE, secret.encode())

    def code_for(self, counter: int) -> str:
        return encode(self.permutation.forward(counter))

    def counter_for(self, code: str) -> int:
        return self.permutation.backward(decode(code))
