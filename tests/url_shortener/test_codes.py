import itertools
import random

import pytest

from url_shortener.codes import (
    CODE_LENGTH,
    CODE_SPACE,
    CodeGenerator,
    FeistelPermutation,
    decode,
    encode,
    is_generated_shape,
)


def test_base62_roundtrip_and_fixed_width() -> None:
    for n in (0, 1, 61, 62, 3843, 3844, CODE_SPACE - 1):
        s = encode(n)
        assert len(s) == CODE_LENGTH
        assert decode(s) == n
    assert encode(0) == "0000000"
    assert encode(61) == "000000z"
    with pytest.raises(ValueError):
        encode(-1)


@pytest.mark.parametrize("domain", [62**2, 1000, 4097])
def test_permutation_is_a_bijection_of_the_domain(domain: int) -> None:
    perm = FeistelPermutation(domain, b"key")
    images = [perm.forward(n) for n in range(domain)]
    assert sorted(images) == list(range(domain))
    assert all(perm.backward(perm.forward(n)) == n for n in range(domain))


def test_different_keys_give_different_permutations() -> None:
    a = [FeistelPermutation(62**3, b"a").forward(n) for n in range(50)]
    b = [FeistelPermutation(62**3, b"b").forward(n) for n in range(50)]
    assert a != b


def test_codes_are_unique_and_not_enumerable() -> None:
    gen = CodeGenerator("secret")
    codes = [gen.code_for(n) for n in range(20_000)]
    assert len(set(codes)) == len(codes)
    assert all(is_generated_shape(c) for c in codes)
    assert all(gen.counter_for(c) == n for n, c in enumerate(codes[:500]))
    # Consecutive counters land far apart: neighbours' values differ by a large fraction of
    # the space on average, and sorted codes are not in counter order.
    values = [decode(c) for c in codes[:1000]]
    gaps = [abs(a - b) for a, b in itertools.pairwise(values)]
    assert sum(gaps) / len(gaps) > CODE_SPACE / 10
    assert sorted(codes[:1000]) != codes[:1000]


def test_generated_shape() -> None:
    assert is_generated_shape("abcDEF1")
    assert not is_generated_shape("abc-EF1")
    assert not is_generated_shape("abcDEF12")
    rng = random.Random(1)
    assert is_generated_shape("".join(rng.choice("xyZ019") for _ in range(CODE_LENGTH)))


async def test_codes_never_repeat_across_blocks_requests_and_instances(settings) -> None:  # type: ignore[no-untyped-def]
    """The direct test for a code collision: small counter blocks, concurrent requests of
    different sizes, and a second service (another instance) taking blocks meanwhile."""
    import asyncio

    from url_shortener.app import create_app
    from url_shortener.service import LinkService

    app = create_app(settings.model_copy(update={"id_block_size": 7}))
    async with app.router.lifespan_context(app):
        one = app.state.links
        other = LinkService(
            settings=one.settings, sessions=one.sessions, cache=one.cache, recorder=one.recorder
        )
        sizes = [1, 3, 20, 2, 7, 9, 1, 15] * 6
        batches = await asyncio.gather(*(svc._next_codes(n) for n in sizes for svc in (one, other)))
    codes = [code for batch in batches for code in batch]
    assert [len(b) for b in batches] == [n for n in sizes for _ in (0, 1)]
    assert len(codes) == 2 * sum(sizes)
    assert len(set(codes)) == len(codes)
