//! The container shared by certificates and passes:
//! `PREFIX ‖ Base45( zlib( COSE_Sign1(tag 18){ protected{alg: EdDSA, kid}, {}, CWT, sig } ) )`.
//!
//! Sealing and opening are the only code that touches the layers; both certificate and pass
//! logic sit on top. Opening enforces [`Limits`] before any expensive or allocating step.

use std::cell::RefCell;

use coset::{Algorithm, CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::keys::Kid;
use crate::sign::SignError;
use crate::verify::VerifyError;

/// Context prefix of a dose certificate.
pub const CERTIFICATE_PREFIX: &str = "VC1:";
/// Context prefix of a pre-registration pass.
pub const REGISTRATION_PREFIX: &str = "RG1:";

/// zlib level used when signing. Level 1 (miniz "fast") is measurably cheaper than 6 and the
/// texts come out the same size or within a couple of bytes: a ~300-byte CWT has little
/// redundancy to find (see README, "Compression level"). Changing it changes the signed texts
/// (not their validity), so the test vectors pin it.
pub const ZLIB_LEVEL: u32 = 1;

/// Hard limits applied to untrusted input before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted text, prefix included, in bytes. A QR code holds at most 4,296
    /// alphanumeric characters, so nothing longer can have come from a scan.
    pub max_text_len: usize,
    /// Most bytes zlib may inflate to; past this the input is a bomb and is refused without
    /// inflating the rest.
    pub max_inflated_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_len: 4096,
            max_inflated_len: 16 * 1024,
        }
    }
}

thread_local! {
    // miniz_oxide's compressor owns ~300 KiB of tables; allocating and zeroing them per
    // certificate would cost as much as the signature. One per thread, reset per use.
    static DEFLATE: RefCell<Option<Compress>> = const { RefCell::new(None) };
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
    // Decompressing an Ed25519 public key costs ~4 µs, a tenth of a verification; a trust list
    // has a handful of keys, so each thread keeps the last few it used.
    static VERIFYING_KEYS: RefCell<Vec<([u8; 32], VerifyingKey)>> = const { RefCell::new(Vec::new()) };
}

/// Most public keys kept per thread by [`verifying_key`].
const VERIFYING_KEY_CACHE: usize = 16;

/// `VerifyingKey::from_bytes`, memoized per thread (only valid points are cached).
fn verifying_key(public_key: &[u8; 32]) -> Option<VerifyingKey> {
    VERIFYING_KEYS.with(|cell| {
        let Ok(mut cache) = cell.try_borrow_mut() else {
            return VerifyingKey::from_bytes(public_key).ok();
        };
        if let Some((_, key)) = cache.iter().find(|(bytes, _)| bytes == public_key) {
            return Some(*key);
        }
        let key = VerifyingKey::from_bytes(public_key).ok()?;
        if cache.len() >= VERIFYING_KEY_CACHE {
            cache.remove(0);
        }
        cache.push((*public_key, key));
        Some(key)
    })
}

/// Sign `payload` (serialized CWT claims) with `key` and wrap it into `prefix` text.
pub(crate) fn seal(
    prefix: &str,
    payload: Vec<u8>,
    key: &SigningKey,
    kid: Kid,
) -> Result<String, SignError> {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .key_id(kid.0.to_vec())
        .build();
    let cose = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(&[], |tbs| key.sign(tbs).to_bytes().to_vec())
        .build()
        .to_tagged_vec()
        .map_err(|e| SignError::Encode(e.to_string()))?;
    let max = Limits::default();
    if cose.len() > max.max_inflated_len {
        return Err(SignError::TooLarge {
            what: "COSE message",
            len: cose.len(),
            max: max.max_inflated_len,
        });
    }
    let compressed = zlib_compress(&cose)?;
    let encoded = base45::encode(&compressed);
    let mut text = String::with_capacity(prefix.len() + encoded.len());
    text.push_str(prefix);
    text.push_str(&encoded);
    if text.len() > max.max_text_len {
        return Err(SignError::TooLarge {
            what: "text",
            len: text.len(),
            max: max.max_text_len,
        });
    }
    Ok(text)
}

/// Compress with the shared per-thread compressor (a fresh one if it is somehow in use).
pub(crate) fn zlib_compress(data: &[u8]) -> Result<Vec<u8>, SignError> {
    DEFLATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let compressor = slot.get_or_insert_with(new_compressor);
            compressor.reset();
            deflate_with(compressor, data)
        }
        Err(_) => deflate_with(&mut new_compressor(), data),
    })
}

fn new_compressor() -> Compress {
    Compress::new(Compression::new(ZLIB_LEVEL), true)
}

fn deflate_with(compressor: &mut Compress, data: &[u8]) -> Result<Vec<u8>, SignError> {
    // Stored-block worst case is ~5 bytes per 64 KiB plus 6 bytes of zlib framing.
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 64);
    // Each round either finishes or is given more room, so a few rounds always suffice.
    for _ in 0..16 {
        let consumed = usize::try_from(compressor.total_in()).unwrap_or(usize::MAX);
        let rest = data.get(consumed..).unwrap_or_default();
        let status = compressor
            .compress_vec(rest, &mut out, FlushCompress::Finish)
            .map_err(|e| SignError::Encode(format!("zlib: {e}")))?;
        if status == Status::StreamEnd {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64));
    }
    Err(SignError::Encode("zlib did not finish".into()))
}

/// An opened (decoded, not yet verified) COSE_Sign1.
pub(crate) struct Opened {
    pub kid: Kid,
    pub sign1: CoseSign1,
}

impl Opened {
    /// The CWT claims bytes (always present: `open` refuses a detached payload).
    pub fn payload(&self) -> &[u8] {
        self.sign1.payload.as_deref().unwrap_or_default()
    }
}

/// Undo the layers of `text` up to a structurally valid COSE_Sign1, enforcing `limits`.
pub(crate) fn open(
    text: &str,
    prefix: &'static str,
    limits: &Limits,
) -> Result<Opened, VerifyError> {
    if text.len() > limits.max_text_len {
        return Err(VerifyError::TooLong {
            len: text.len(),
            max: limits.max_text_len,
        });
    }
    let Some(body) = text.strip_prefix(prefix) else {
        return Err(VerifyError::BadPrefix { expected: prefix });
    };
    let compressed = base45_decode(body)?;
    let cose = zlib_inflate(&compressed, limits.max_inflated_len)?;
    parse_cose(&cose)
}

/// RFC 9285 Base45, refusing non-canonical input.
pub(crate) fn base45_decode(body: &str) -> Result<Vec<u8>, VerifyError> {
    let bytes = base45::decode(body).map_err(|_| VerifyError::BadBase45("not Base45 text"))?;
    // The crate accepts a final 2-character group worth more than 255 and truncates it; RFC
    // 9285 says such input is invalid, and accepting it would let two texts carry one signature.
    if body.len() % 3 == 2 {
        let tail = &body.as_bytes()[body.len() - 2..];
        let digit = |c: u8| {
            base45::alphabet::decode(c)
                .map(u32::from)
                .unwrap_or(u32::MAX)
        };
        if digit(tail[0]).saturating_add(digit(tail[1]).saturating_mul(45)) > 255 {
            return Err(VerifyError::BadBase45("final Base45 pair exceeds one byte"));
        }
    }
    Ok(bytes)
}

/// zlib inflate that never holds more than `limit + 1` output bytes: a bomb is refused as
/// soon as it passes the limit, without inflating the rest.
pub(crate) fn zlib_inflate(input: &[u8], limit: usize) -> Result<Vec<u8>, VerifyError> {
    INFLATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let inflater = slot.get_or_insert_with(|| Decompress::new(true));
            inflater.reset(true);
            inflate_with(inflater, input, limit)
        }
        Err(_) => inflate_with(&mut Decompress::new(true), input, limit),
    })
}

fn inflate_with(d: &mut Decompress, input: &[u8], limit: usize) -> Result<Vec<u8>, VerifyError> {
    let cap = limit.saturating_add(1);
    // Certificates inflate to under 1 KiB; start there and grow towards the cap only if needed.
    let mut out = Vec::with_capacity(cap.min(input.len().saturating_mul(4).max(1024)));
    loop {
        let in_before = usize::try_from(d.total_in()).unwrap_or(usize::MAX);
        let out_before = out.len();
        let rest = input.get(in_before..).unwrap_or_default();
        let status = d
            .decompress_vec(rest, &mut out, FlushDecompress::None)
            .map_err(|_| VerifyError::BadZlib("corrupt zlib stream"))?;
        if out.len() > limit {
            return Err(VerifyError::TooLarge { max: limit });
        }
        if status == Status::StreamEnd {
            break;
        }
        if out.len() == out.capacity() {
            // Out of room but under the cap: grow geometrically, never past `limit + 1`.
            let more = (cap - out.len()).min(out.capacity().max(1024));
            out.reserve_exact(more);
        } else if out.len() == out_before
            && usize::try_from(d.total_in()).unwrap_or(usize::MAX) == in_before
        {
            return Err(VerifyError::BadZlib("zlib stream is truncated"));
        }
    }
    if usize::try_from(d.total_in()).ok() != Some(input.len()) {
        return Err(VerifyError::BadZlib(
            "bytes after the end of the zlib stream",
        ));
    }
    Ok(out)
}

/// Parse a tagged COSE_Sign1 and check it has exactly the shape we issue.
pub(crate) fn parse_cose(cose: &[u8]) -> Result<Opened, VerifyError> {
    let sign1 = CoseSign1::from_tagged_slice(cose)
        .map_err(|e| VerifyError::BadCose(format!("not a tagged COSE_Sign1 (tag 18): {e}")))?;
    let h = &sign1.protected.header;
    if h.alg != Some(Algorithm::Assigned(iana::Algorithm::EdDSA)) {
        return Err(VerifyError::BadCose(
            "protected header alg is not EdDSA (-8)".into(),
        ));
    }
    // `crit` or any other parameter would change how the message must be processed; we issue
    // none, so refuse rather than ignore.
    if !h.crit.is_empty()
        || h.content_type.is_some()
        || !h.iv.is_empty()
        || !h.partial_iv.is_empty()
        || !h.counter_signatures.is_empty()
        || !h.rest.is_empty()
    {
        return Err(VerifyError::BadCose(
            "protected header carries parameters other than alg and kid".into(),
        ));
    }
    let kid: [u8; 8] = h.key_id.as_slice().try_into().map_err(|_| {
        VerifyError::BadCose(format!(
            "protected header kid is {} bytes, expected 8",
            h.key_id.len()
        ))
    })?;
    // Unprotected parameters are not signed; we put none there, so anything there is noise
    // an attacker could vary at will.
    if !sign1.unprotected.is_empty() {
        return Err(VerifyError::BadCose(
            "unprotected header is not empty".into(),
        ));
    }
    if sign1.payload.is_none() {
        return Err(VerifyError::BadCose("payload is detached (nil)".into()));
    }
    Ok(Opened {
        kid: Kid(kid),
        sign1,
    })
}

/// Check the Ed25519 signature of `opened` under `public_key` (strict verification: rejects
/// small-order keys and non-canonical signatures, so a signature cannot be malleated).
pub(crate) fn check_signature(opened: &Opened, public_key: &[u8; 32]) -> Result<(), VerifyError> {
    let key = verifying_key(public_key).ok_or(VerifyError::BadTrustedKey {
        kid: opened.kid,
        reason: "public key is not a valid Ed25519 point",
    })?;
    let signature =
        Signature::from_slice(&opened.sign1.signature).map_err(|_| VerifyError::BadSignature)?;
    opened
        .sign1
        .verify_signature(&[], |_, tbs| key.verify_strict(tbs, &signature))
        .map_err(|_| VerifyError::BadSignature)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn inflate_round_trip_and_caps() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let z = zlib_compress(&data).unwrap();
        assert_eq!(zlib_inflate(&z, 5000).unwrap(), data);
        assert!(matches!(
            zlib_inflate(&z, 4999),
            Err(VerifyError::TooLarge { max: 4999 })
        ));
        // Truncated and trailing input.
        assert!(matches!(
            zlib_inflate(&z[..z.len() - 1], 10_000),
            Err(VerifyError::BadZlib(_))
        ));
        let mut trailing = z.clone();
        trailing.push(0);
        assert!(matches!(
            zlib_inflate(&trailing, 10_000),
            Err(VerifyError::BadZlib(_))
        ));
        // Bad checksum.
        let mut bad = z.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(zlib_inflate(&bad, 10_000).is_err());
        assert!(zlib_inflate(&[], 10).is_err());
        // A zero limit still works for the empty stream.
        assert_eq!(zlib_inflate(&zlib_compress(&[]).unwrap(), 0).unwrap(), b"");
    }

    #[test]
    fn base45_must_be_canonical() {
        // "FGW" is 0xFFFF in the low-high-digit order of RFC 9285; "U5" = 0xFF, "V5" = 256.
        assert_eq!(base45_decode("U5").unwrap(), vec![0xff]);
        assert!(base45_decode("V5").is_err());
        assert!(base45_decode("GGW").is_err()); // 65536
        assert!(base45_decode("a").is_err());
        assert!(base45_decode("AAAA").is_err());
    }

    #[test]
    fn limits_before_work() {
        let limits = Limits {
            max_text_len: 8,
            max_inflated_len: 10,
        };
        assert!(matches!(
            open("VC1:AAAAAAAAAA", CERTIFICATE_PREFIX, &limits),
            Err(VerifyError::TooLong { len: 14, max: 8 })
        ));
        assert!(matches!(
            open("HC1:AB", CERTIFICATE_PREFIX, &limits),
            Err(VerifyError::BadPrefix { .. })
        ));
    }
}
