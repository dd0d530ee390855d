#!/usr/bin/env python3
"""Verify a vaxcamp VC1:/RG1: text with an independent COSE implementation (pycose).

Nothing here comes from the Rust crate: Base45 is PyPI's `base45`, zlib is Python's, CBOR is
`cbor2`, and the COSE_Sign1 / EdDSA signature check is `pycose`.

Usage:
    python3 verify_pycose.py TRUST_LIST.json TEXT        # TEXT, or @FILE, or - for stdin
    python3 verify_pycose.py --vectors VECTORS.json TRUST_LIST.json

The first form prints the protected header and claims as JSON and exits 0 if the signature
verifies under the trust list's key for the kid (with the purpose the prefix requires), 1 if
not. The second verifies both test vectors, checks their claims against the vector content,
and checks that a flipped signature byte and a flipped payload byte are refused; it ends with
an "N passed, N failed" line.

Requires: pip install pycose base45 cbor2
"""

import json
import sys
import zlib

import base45
import cbor2
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import CoseMessage, Sign1Message

PREFIX_PURPOSE = {"VC1:": "certificate", "RG1:": "registration"}
CLAIM_NAMES = {1: "iss", 2: "sub", 4: "exp", 6: "iat", 7: "cti", -65537: "vaccination"}
MAX_INFLATED = 16 * 1024


def unwrap(text):
    """Prefix -> Base45 -> zlib (capped) -> COSE bytes. Returns (purpose, cose_bytes)."""
    prefix = text[:4]
    if prefix not in PREFIX_PURPOSE:
        raise ValueError(f"unknown prefix {prefix!r}")
    compressed = base45.b45decode(text[4:])
    inflater = zlib.decompressobj()
    cose = inflater.decompress(compressed, MAX_INFLATED + 1)
    if len(cose) > MAX_INFLATED or not inflater.eof:
        raise ValueError("zlib stream too large or truncated")
    return PREFIX_PURPOSE[prefix], cose


def rewrap(prefix, cose):
    return prefix + base45.b45encode(zlib.compress(cose)).decode()


def decode_sign1(cose):
    """pycose's own decoder; with cbor2 >= 6 (arrays decode as tuples and maps as immutable
    maps, which pycose 1.1 does not expect) fall back to handing pycose the same array as a
    list. Either way pycose parses the headers and checks the signature."""
    try:
        return CoseMessage.decode(cose)
    except TypeError:
        tagged = cbor2.loads(cose)
        if getattr(tagged, "tag", None) != 18 or not isinstance(tagged.value, (list, tuple)):
            raise ValueError("not a tagged COSE_Sign1 (tag 18)") from None
        obj = list(tagged.value)
        obj[1] = dict(obj[1])  # unprotected header: cbor2 6 gives an immutable map
        return Sign1Message.from_cose_obj(obj, True)


def plain(value):
    """cbor2 >= 6 returns tuples (and frozen maps); normalise to lists and dicts."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: plain(v) for k, v in value.items()}
    return value


def verify(text, trust):
    """Verify with pycose; returns (kid_hex, claims dict). Raises on any failure."""
    purpose, cose = unwrap(text)
    msg = decode_sign1(cose)
    if not isinstance(msg, Sign1Message):
        raise ValueError("not a COSE_Sign1 message")
    if msg.phdr.get(Algorithm) is not EdDSA:
        raise ValueError(f"alg is {msg.phdr.get(Algorithm)}, expected EdDSA")
    kid = bytes(msg.phdr.get(KID, b"")).hex()
    entry = next((k for k in trust["keys"] if k["kid"] == kid), None)
    if entry is None:
        raise ValueError(f"kid {kid} not in trust list")
    if entry["purpose"] != purpose:
        raise ValueError(f"kid {kid} is a {entry['purpose']} key, {purpose} needed")
    if entry["status"] == "revoked":
        raise ValueError(f"kid {kid} is revoked")
    msg.key = OKPKey(crv=Ed25519, x=bytes.fromhex(entry["public_key"]))
    if not msg.verify_signature():
        raise ValueError("signature does not verify")
    claims = plain(cbor2.loads(msg.payload))
    return kid, {CLAIM_NAMES.get(k, str(k)): v for k, v in claims.items()}


def printable(value):
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, dict):
        return {str(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


def expected_claims(vector, purpose):
    c = vector["content"]
    if purpose == "registration":
        out = {"iss": c["issuer"], "sub": c["person_code"], "iat": c["issued_at"]}
        if c.get("expires_at") is not None:
            out["exp"] = c["expires_at"]
        return out
    doses = [
        {"co": d["country"], "dn": d["dose_number"], "dt": d["date"], "lo": d["lot"],
         "mp": d["product"], "sd": d["total_doses"], "si": d["site"]}
        for d in c["doses"]
    ]
    return {
        "iss": c["issuer"], "exp": c["expires_at"], "iat": c["issued_at"],
        "cti": c["certificate_id"].encode(),
        "vaccination": {"v": doses, "st": c["status"], "dob": c["holder"]["birth_date"],
                        "nam": c["holder"]["name"]},
    }


def check_vectors(vectors_path, trust):
    with open(vectors_path, encoding="utf-8") as f:
        vectors = json.load(f)
    passed = failed = 0

    def outcome(name, ok, detail=""):
        nonlocal passed, failed
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        if ok:
            passed += 1
        else:
            failed += 1

    for purpose in ("certificate", "registration"):
        vector = vectors[purpose]
        text = vector["text"]
        try:
            kid, claims = verify(text, trust)
            ok = kid == vector["kid"] and claims == expected_claims(vector, purpose)
            outcome(f"{purpose} vector verifies and claims match", ok,
                    "" if ok else json.dumps(printable(claims)))
        except Exception as e:  # noqa: BLE001 - report any failure as a failed check
            outcome(f"{purpose} vector verifies", False, repr(e))
        _, cose = unwrap(text)
        if cose.hex() != vector["cose_sign1_hex"]:
            outcome(f"{purpose} COSE bytes equal cose_sign1_hex", False)
        for what, offset in (("signature", len(cose) - 1), ("payload", len(cose) - 80)):
            tampered = bytearray(cose)
            tampered[offset] ^= 0x01
            try:
                verify(rewrap(text[:4], bytes(tampered)), trust)
                outcome(f"{purpose} with a flipped {what} byte is refused", False, "accepted")
            except Exception:  # noqa: BLE001 - any refusal is the expected outcome
                outcome(f"{purpose} with a flipped {what} byte is refused", True)
    print(f"pycose interop: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def main(argv):
    if len(argv) == 4 and argv[1] == "--vectors":
        with open(argv[3], encoding="utf-8") as f:
            trust = json.load(f)
        return check_vectors(argv[2], trust)
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        trust = json.load(f)
    text = argv[2]
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            text = f.read()
    text = text.strip()
    try:
        kid, claims = verify(text, trust)
    except Exception as e:  # noqa: BLE001 - print the reason and fail
        print(f"REFUSED: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"verified_by": "pycose", "alg": "EdDSA", "kid": kid,
                      "claims": printable(claims)}, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
