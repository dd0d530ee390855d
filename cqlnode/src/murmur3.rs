//! Cassandra's flavour of MurmurHash3 x64/128, used by `Murmur3Partitioner`.
//!
//! Cassandra's Java port reads the tail bytes as *signed* bytes, which changes the hash of
//! keys whose length is not a multiple of 16 and whose tail has bytes >= 0x80; drivers copy
//! that quirk to route requests, so this node must copy it too, or token-aware routing and
//! `token()` ranges would disagree with the driver.

use std::num::Wrapping as W;

const C1: W<i64> = W(0x87c3_7b91_1142_53d5_u64 as i64);
const C2: W<i64> = W(0x4cf5_ad43_2745_937f_u64 as i64);

fn rotl(v: W<i64>, n: u32) -> W<i64> {
    W(v.0.rotate_left(n))
}

fn fmix(mut k: W<i64>) -> W<i64> {
    k ^= W(((k.0 as u64) >> 33) as i64);
    k *= W(0xff51_afd7_ed55_8ccd_u64 as i64);
    k ^= W(((k.0 as u64) >> 33) as i64);
    k *= W(0xc4ce_b9fe_1a85_ec53_u64 as i64);
    k ^= W(((k.0 as u64) >> 33) as i64);
    k
}

fn le_i64(b: &[u8]) -> W<i64> {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    W(i64::from_le_bytes(a))
}

/// The full 128-bit hash `(h1, h2)` with seed 0.
pub fn hash128(data: &[u8]) -> (i64, i64) {
    let mut h1 = W(0i64);
    let mut h2 = W(0i64);
    let mut chunks = data.chunks_exact(16);
    for block in &mut chunks {
        let mut k1 = le_i64(&block[..8]);
        let mut k2 = le_i64(&block[8..]);
        k1 *= C1;
        k1 = rotl(k1, 31);
        k1 *= C2;
        h1 ^= k1;
        h1 = rotl(h1, 27);
        h1 += h2;
        h1 = h1 * W(5) + W(0x52dc_e729);
        k2 *= C2;
        k2 = rotl(k2, 33);
        k2 *= C1;
        h2 ^= k2;
        h2 = rotl(h2, 31);
        h2 += h1;
        h2 = h2 * W(5) + W(0x3849_5ab5);
    }
    let tail = chunks.remainder();
    let mut k1 = W(0i64);
    let mut k2 = W(0i64);
    if tail.len() > 8 {
        for i in (8..tail.len()).rev() {
            // `as i8 as i64`: the signed-byte quirk described in the module docs.
            k2 ^= W(i64::from(tail[i] as i8)) << ((i - 8) * 8);
        }
        k2 *= C2;
        k2 = rotl(k2, 33);
        k2 *= C1;
        h2 ^= k2;
    }
    if !tail.is_empty() {
        for i in (0..tail.len().min(8)).rev() {
            k1 ^= W(i64::from(tail[i] as i8)) << (i * 8);
        }
        k1 *= C1;
        k1 = rotl(k1, 31);
        k1 *= C2;
        h1 ^= k1;
    }
    let len = W(data.len() as i64);
    h1 ^= len;
    h2 ^= len;
    h1 += h2;
    h2 += h1;
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 += h2;
    h2 += h1;
    (h1.0, h2.0)
}

/// The token of a serialized partition key, as `Murmur3Partitioner.getToken` computes it
/// (including its mapping of `i64::MIN`, which is reserved as the minimum token, to `i64::MAX`).
pub fn token(partition_key: &[u8]) -> i64 {
    let (h1, _) = hash128(partition_key);
    if h1 == i64::MIN { i64::MAX } else { h1 }
}

#[cfg(test)]
mod tests {
    use super::token;

    #[test]
    fn matches_cassandra_tokens() {
        // Expected values taken from the scylla driver's own partitioner tests.
        for (key, expected) in [
            ("test", -6_017_608_668_500_074_083_i64),
            ("xd", 4_507_812_186_440_344_727),
            ("primary_key", -1_632_642_444_691_073_360),
            ("kremówki", 4_354_931_215_268_080_151),
        ] {
            assert_eq!(token(key.as_bytes()), expected, "{key}");
        }
    }
}
