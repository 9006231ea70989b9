"""Known-answer tests for the primitives (property 9) and low-order key rejection (property 11)."""

from __future__ import annotations

import hmac
import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import AuthenticationError, InvalidKeyError
from protocols.crypto import (
    aead_decrypt,
    aead_encrypt,
    agree,
    check_x25519_public_key,
    derive_x25519_public,
    ed25519_public_bytes,
    generate_key_pair,
    hkdf_expand,
    hkdf_extract,
    hkdf_sha256,
    hmac_sha256,
    sign,
    verify_signature,
)
from protocols.errors import ProtocolConfigError
from protocols.prg import MAX_KEYSTREAM_BYTES, MaskExpander, derive_mask_key, keystream, keystream_encryptor

H = bytes.fromhex


# ------------------------------------------------------------------ AES-CTR (NIST SP 800-38A F.5.1)
NIST_KEY = H("2b7e151628aed2a6abf7158809cf4f3c")
NIST_CTR = H("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
NIST_PT = H(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)
NIST_CT = H(
    "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff"
    "5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee"
)


def test_aes128_ctr_nist_sp800_38a_f51() -> None:
    enc = Cipher(algorithms.AES(NIST_KEY), modes.CTR(NIST_CTR)).encryptor()
    assert enc.update(NIST_PT) + enc.finalize() == NIST_CT


def test_prg_keystream_is_aes_ctr_with_gctr_counter_blocks() -> None:
    """The PRG is AES-128-CTR with GCM's counter layout under a zero IV: block i = AES_K(0^96 ||
    [i + 2]_32); the hot path's GCM encryptor yields the same bytes, also across 32-bit carries
    it never reaches (the counter would need 2^32 blocks)."""
    ecb = Cipher(algorithms.AES(NIST_KEY), modes.ECB()).encryptor()
    blocks = b"".join(ecb.update(bytes(12) + (i + 2).to_bytes(4, "big")) for i in range(4))
    assert keystream(key=NIST_KEY, nbytes=64) == blocks
    assert keystream_encryptor(key=NIST_KEY).update(bytes(64)) == blocks
    key = os.urandom(16)
    enc = keystream_encryptor(key=key)
    parts = [enc.update(bytes(n)) for n in (1, 15, 17, 4000, 100_003)]
    assert b"".join(parts) == keystream(key=key, nbytes=sum(map(len, parts)))
    # and the SP 800-38A keystream (counter f0f1..) XOR plaintext = ciphertext
    ecb2 = Cipher(algorithms.AES(NIST_KEY), modes.ECB()).encryptor()
    ctr = int.from_bytes(NIST_CTR, "big")
    ks = b"".join(ecb2.update(((ctr + i) % 2**128).to_bytes(16, "big")) for i in range(4))
    assert bytes(a ^ b for a, b in zip(ks, NIST_PT, strict=True)) == NIST_CT


@pytest.mark.parametrize("bits", [8, 32, 33, 64])
def test_prg_words_are_little_endian_on_every_platform(bits: int) -> None:
    m = 37
    exp = MaskExpander(length=m, bits=bits)
    words = exp.expand(key=NIST_KEY)
    width = 4 if bits <= 32 else 8
    ks = keystream(key=NIST_KEY, nbytes=width * m)
    expected = [int.from_bytes(ks[width * i : width * (i + 1)], "little") for i in range(m)]
    assert [int(w) for w in words] == expected
    # first words of the NIST key's stream, fixed forever (regression against endianness changes)
    if width == 4:
        assert int(words[0]) == int.from_bytes(keystream(key=NIST_KEY, nbytes=4), "little")


def test_mask_key_and_words_known_answer() -> None:
    """Seed -> HKDF-SHA256 mask key -> AES-128 counter blocks -> little-endian words, pinned.

    The key is recomputed with cryptography's own HKDF and the words from AES-ECB of the counter
    blocks 0^96 || [i + 2]_32, so a change to the labels, the counter layout or the byte order of
    the words fails here; the hex values pin the whole chain against silent drift between versions
    (clients and server of different versions must derive the same masks).
    """
    seed, sid = bytes(range(32)), bytes(range(100, 132))
    ids = bytes.fromhex("0000000100000002")
    key = derive_mask_key(seed=seed, session_id=sid, purpose="pair-mask", ids=ids)
    independent = HKDF(algorithm=SHA256(), length=16, salt=sid, info=b"secfed/secagg/v1/pair-mask" + ids)
    assert key == independent.derive(seed)
    assert key.hex() == "42150fcbbfa1fde0cb37e220ac02271c"
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    blocks = ecb.update(b"".join(bytes(12) + (i + 2).to_bytes(4, "big") for i in range(2)))
    words32 = MaskExpander(length=4, bits=32).expand(key=key)
    from_blocks = [int.from_bytes(blocks[4 * i : 4 * i + 4], "little") for i in range(4)]
    assert [int(w) for w in words32] == from_blocks
    assert [int(w) for w in words32] == [0x8B0DDBED, 0x443E5BB2, 0xF53FF09D, 0x155028F7]
    words64 = MaskExpander(length=2, bits=64).expand(key=key)
    assert [int(w) for w in words64] == [0x443E5BB28B0DDBED, 0x155028F7F53FF09D]


def test_prg_refuses_keystreams_the_32_bit_counter_cannot_cover() -> None:
    """One mask may use at most 2^32 - 2 counter blocks; longer vectors are refused up front."""
    with pytest.raises(ProtocolConfigError, match="keystream"):
        MaskExpander(length=MAX_KEYSTREAM_BYTES // 4 + 1, bits=32)
    with pytest.raises(ProtocolConfigError, match="keystream"):
        MaskExpander(length=MAX_KEYSTREAM_BYTES // 8 + 1, bits=64)
    assert MaskExpander(length=MAX_KEYSTREAM_BYTES // 8, bits=64).length == MAX_KEYSTREAM_BYTES // 8
    with pytest.raises(ProtocolConfigError, match="keystream"):
        keystream(key=NIST_KEY, nbytes=MAX_KEYSTREAM_BYTES + 1)


def test_prg_add_into_matches_reference_modular_arithmetic() -> None:
    m = 1000
    exp = MaskExpander(length=m, bits=20)
    acc = exp.zeros()
    key = os.urandom(16)
    exp.add_into(acc=acc, key=key, sign=1)
    exp.add_into(acc=acc, key=key, sign=1)
    ks = np.frombuffer(keystream(key=key, nbytes=4 * m), dtype="<u4").astype(np.uint64)
    assert np.array_equal(acc.astype(np.uint64), (2 * ks) % 2**32)
    exp.add_into(acc=acc, key=key, sign=-1)
    exp.add_into(acc=acc, key=key, sign=-1)
    assert not acc.any()


@pytest.mark.parametrize("bits", [20, 40])
def test_chunked_multi_mask_addition_equals_full_expansion(bits: int) -> None:
    m = 3 * MaskExpander.CHUNK_BYTES // 4 + 123  # several chunks and a ragged tail
    exp = MaskExpander(length=m, bits=bits)
    masks = [(os.urandom(16), sgn) for sgn in (1, -1, 1, 1, -1)]
    acc = exp.zeros()
    acc += np.arange(m, dtype=acc.dtype)
    exp.add_masks(acc=acc, masks=masks)
    modulus = 2**32 if bits <= 32 else 2**64
    ref = np.arange(m, dtype=object)
    for key, sgn in masks:
        ref = ref + sgn * exp.expand(key=key).astype(object)
    assert [int(a) for a in acc] == [int(r) % modulus for r in ref]


def test_mask_keys_are_domain_separated() -> None:
    seed, sid = os.urandom(32), os.urandom(32)
    a = derive_mask_key(seed=seed, session_id=sid, purpose="self-mask", ids=b"\x00\x00\x00\x01")
    b = derive_mask_key(seed=seed, session_id=sid, purpose="pair-mask", ids=b"\x00\x00\x00\x01")
    c = derive_mask_key(seed=seed, session_id=os.urandom(32), purpose="self-mask", ids=b"\x00\x00\x00\x01")
    d = derive_mask_key(seed=seed, session_id=sid, purpose="self-mask", ids=b"\x00\x00\x00\x02")
    assert len({a, b, c, d}) == 4 and all(len(k) == 16 for k in (a, b, c, d))


# ----------------------------------------------------------------------------- HKDF (RFC 5869, test case 1)
def test_hkdf_rfc5869_case1() -> None:
    ikm = H("0b" * 22)
    salt = H("000102030405060708090a0b0c")
    info = H("f0f1f2f3f4f5f6f7f8f9")
    prk = hkdf_extract(salt=salt, ikm=ikm)
    assert prk == H("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
    okm = H("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    assert hkdf_expand(prk=prk, info=info, length=42) == okm
    assert hkdf_sha256(ikm=ikm, salt=salt, info=info, length=42) == okm


def test_hkdf_rfc5869_case3_empty_salt_and_info() -> None:
    """An empty salt means 32 zero bytes (RFC 5869 section 2.2)."""
    ikm = H("0b" * 22)
    okm = H("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
    assert hkdf_extract(salt=b"", ikm=ikm) == H(
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
    )
    assert hkdf_sha256(ikm=ikm, salt=b"", info=b"", length=42) == okm


def test_hkdf_agrees_with_cryptography_for_other_lengths() -> None:
    ikm, salt, info = os.urandom(32), os.urandom(32), b"secfed test"
    for length in (1, 16, 32, 33, 100):
        ref = HKDF(algorithm=SHA256(), length=length, salt=salt, info=info).derive(ikm)
        assert hkdf_sha256(ikm=ikm, salt=salt, info=info, length=length) == ref
    # salts longer than SHA-256's 64-byte block are hashed first (RFC 2104), also when cached
    for salt in (os.urandom(64), os.urandom(65), os.urandom(200), os.urandom(200)):
        ref = HKDF(algorithm=SHA256(), length=32, salt=salt, info=info).derive(ikm)
        assert hkdf_sha256(ikm=ikm, salt=salt, info=info, length=32) == ref
        assert hkdf_sha256(ikm=ikm, salt=salt, info=info, length=32) == ref


# ----------------------------------------------------------------------------- HMAC (RFC 4231)
@pytest.mark.parametrize(
    ("key", "data", "tag"),
    [
        (  # test case 1
            H("0b" * 20),
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (  # test case 2: a key shorter than the output
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (  # test case 6: a 131-byte key, hashed first
            H("aa" * 131),
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
    ],
)
def test_hmac_sha256_rfc4231(key: bytes, data: bytes, tag: str) -> None:
    assert hmac_sha256(key=key, message=data) == H(tag)


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=200), message=st.binary(max_size=300))
def test_hmac_sha256_equals_the_standard_library(key: bytes, message: bytes) -> None:
    assert hmac_sha256(key=key, message=message) == hmac.digest(key, message, "sha256")
    prk = hmac.digest(key if key else bytes(32), message, "sha256")
    assert hkdf_extract(salt=key, ikm=message) == prk
    with pytest.raises(ValueError):
        hkdf_expand(prk=os.urandom(32), info=b"", length=255 * 32 + 1)


# ----------------------------------------------------------------------------- X25519 (RFC 7748)
@pytest.mark.parametrize(
    ("scalar", "u", "out"),
    [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ],
)
def test_x25519_rfc7748_section_5_2(scalar: str, u: str, out: str) -> None:
    sk = X25519PrivateKey.from_private_bytes(H(scalar))
    assert agree(private=sk, public=H(u)) == H(out)


def test_x25519_rfc7748_section_6_1() -> None:
    a = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    b = H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    a_pub = H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    b_pub = H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert derive_x25519_public(private_bytes=a) == a_pub
    assert derive_x25519_public(private_bytes=b) == b_pub
    assert agree(private=X25519PrivateKey.from_private_bytes(a), public=b_pub) == shared
    assert agree(private=X25519PrivateKey.from_private_bytes(b), public=a_pub) == shared


P = 2**255 - 19
ORDER8_A = H("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
ORDER8_B = H("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157")


def _low_order_encodings() -> list[bytes]:
    canonical = [0, 1, P - 1, int.from_bytes(ORDER8_A, "little"), int.from_bytes(ORDER8_B, "little")]
    encs = set()
    for u in canonical:
        for v in (u, u + P):  # non-canonical representative (>= p) where it fits in 255 bits
            if v < 2**255:
                encs.add(v.to_bytes(32, "little"))
                encs.add((v | (1 << 255)).to_bytes(32, "little"))  # high bit set (ignored by X25519)
    return sorted(encs)


@pytest.mark.parametrize("pk", _low_order_encodings(), ids=lambda b: b.hex()[:8])
def test_low_order_public_keys_are_rejected(pk: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        check_x25519_public_key(pk)
    with pytest.raises(InvalidKeyError):
        agree(private=generate_key_pair().private, public=pk)
    # and the check really is about small order: cryptography's own exchange refuses them too
    with pytest.raises(InvalidKeyError):
        agree(private=generate_key_pair().private, public=pk, checked=True)


def test_valid_public_keys_pass_and_wrong_length_fails() -> None:
    kp = generate_key_pair()
    check_x25519_public_key(kp.public_bytes)
    with pytest.raises(InvalidKeyError):
        check_x25519_public_key(kp.public_bytes[:31])
    assert kp.public_bytes == derive_x25519_public(private_bytes=kp.private_bytes)


def test_fresh_key_pairs_differ() -> None:
    keys = {generate_key_pair().public_bytes for _ in range(50)}
    assert len(keys) == 50


# ----------------------------------------------------------------------------- AEAD and signatures
def test_aead_roundtrip_and_tamper_detection() -> None:
    key, aad = os.urandom(32), b"session|1|2|stage"
    blob = aead_encrypt(key=key, plaintext=b"share bytes", aad=aad)
    assert aead_decrypt(key=key, blob=blob, aad=aad) == b"share bytes"
    for i in range(len(blob)):
        flipped = bytearray(blob)
        flipped[i] ^= 0x01
        with pytest.raises(AuthenticationError):
            aead_decrypt(key=key, blob=bytes(flipped), aad=aad)
    with pytest.raises(AuthenticationError):
        aead_decrypt(key=key, blob=blob, aad=aad + b"x")
    with pytest.raises(AuthenticationError):
        aead_decrypt(key=os.urandom(32), blob=blob, aad=aad)
    with pytest.raises(AuthenticationError):
        aead_decrypt(key=key, blob=blob[:20], aad=aad)


def test_ed25519_sign_verify() -> None:
    sk = Ed25519PrivateKey.generate()
    sig = sign(key=sk, message=b"statement")
    verify_signature(public=ed25519_public_bytes(sk), message=b"statement", signature=sig)
    with pytest.raises(AuthenticationError):
        verify_signature(public=ed25519_public_bytes(sk), message=b"statemenT", signature=sig)
    with pytest.raises(AuthenticationError):
        verify_signature(public=b"\x00" * 31, message=b"statement", signature=sig)
