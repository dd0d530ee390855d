//! The byte-level vocabulary of the native protocol v4: the frame header, the opcodes and the
//! primitive notations (`[int]`, `[string]`, `[bytes]`, ...) of section 3 of the spec.
//!
//! Hand-written rather than borrowed: `cassandra-protocol` and `scylla-cql` are client-side
//! codecs (they serialize requests and parse responses), while a server needs the opposite
//! direction, and these few primitives are smaller than the glue either crate would need.

use std::collections::HashMap;

/// Length of the fixed frame header: version, flags, stream, opcode, body length.
pub const HEADER_LEN: usize = 9;
/// The only protocol version spoken here (the `scylla` driver speaks only v4).
pub const VERSION: u8 = 0x04;
/// Bit set in the version byte of every response frame.
pub const RESPONSE_BIT: u8 = 0x80;
/// Largest body accepted: the spec's limit is 256 MiB; tests never get close.
pub const MAX_BODY: usize = 256 * 1024 * 1024;

/// Header flag: the request carries a custom payload (skipped: nothing here uses one).
pub const FLAG_CUSTOM_PAYLOAD: u8 = 0x04;
/// Header flag: the body is compressed (never negotiated here, so refused).
pub const FLAG_COMPRESSION: u8 = 0x01;

/// Opcodes of the requests and responses this node knows.
pub mod opcode {
    pub const ERROR: u8 = 0x00;
    pub const STARTUP: u8 = 0x01;
    pub const READY: u8 = 0x02;
    pub const AUTHENTICATE: u8 = 0x03;
    pub const OPTIONS: u8 = 0x05;
    pub const SUPPORTED: u8 = 0x06;
    pub const QUERY: u8 = 0x07;
    pub const RESULT: u8 = 0x08;
    pub const PREPARE: u8 = 0x09;
    pub const EXECUTE: u8 = 0x0A;
    pub const REGISTER: u8 = 0x0B;
    pub const EVENT: u8 = 0x0C;
    pub const BATCH: u8 = 0x0D;
    pub const AUTH_RESPONSE: u8 = 0x0F;
    pub const AUTH_SUCCESS: u8 = 0x10;
}

/// A frame header as read off the socket.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub version: u8,
    pub flags: u8,
    pub stream: i16,
    pub opcode: u8,
    pub length: usize,
}

impl Header {
    /// Parses the 9 header bytes; the length is checked against [`MAX_BODY`].
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
        let length = i32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        let length = usize::try_from(length)
            .ok()
            .filter(|len| *len <= MAX_BODY)
            .ok_or_else(|| WireError(format!("invalid frame body length {length}")))?;
        Ok(Header {
            version: bytes[0],
            flags: bytes[1],
            stream: i16::from_be_bytes([bytes[2], bytes[3]]),
            opcode: bytes[4],
            length,
        })
    }
}

/// Builds one complete response frame (header and body).
pub fn response_frame(stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.push(VERSION | RESPONSE_BIT);
    frame.push(0);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.push(opcode);
    // Bodies are built in memory from small test data; the length always fits.
    let len = i32::try_from(body.len()).unwrap_or(i32::MAX);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// A malformed request body: answered with a protocol error (0x000A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

/// A bound value as sent by the client: `[value]` distinguishes null (-1) from unset (-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawValue {
    Null,
    Unset,
    Bytes(Vec<u8>),
}

/// A cursor over a request body.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError(format!(
                "body too short: wanted {n} more bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self) -> Result<i64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// `[string]`: a `[short]` length then UTF-8.
    pub fn string(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u16()?);
        self.utf8(len)
    }

    /// `[long string]`: an `[int]` length then UTF-8.
    pub fn long_string(&mut self) -> Result<String, WireError> {
        let len = self.i32()?;
        let len = usize::try_from(len).map_err(|_| WireError(format!("negative length {len}")))?;
        self.utf8(len)
    }

    fn utf8(&mut self, len: usize) -> Result<String, WireError> {
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError("string is not UTF-8".into()))
    }

    /// `[short bytes]`.
    pub fn short_bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let len = usize::from(self.u16()?);
        Ok(self.take(len)?.to_vec())
    }

    /// `[bytes]`: negative length means null.
    pub fn bytes(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let len = self.i32()?;
        match usize::try_from(len) {
            Ok(len) => Ok(Some(self.take(len)?.to_vec())),
            Err(_) => Ok(None),
        }
    }

    /// `[value]`: like `[bytes]` but -2 means "unset".
    pub fn value(&mut self) -> Result<RawValue, WireError> {
        let len = self.i32()?;
        match len {
            -1 => Ok(RawValue::Null),
            -2 => Ok(RawValue::Unset),
            _ => {
                let len = usize::try_from(len)
                    .map_err(|_| WireError(format!("invalid value length {len}")))?;
                Ok(RawValue::Bytes(self.take(len)?.to_vec()))
            }
        }
    }

    /// `[string map]`.
    pub fn string_map(&mut self) -> Result<HashMap<String, String>, WireError> {
        let n = self.u16()?;
        let mut map = HashMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.string()?;
            map.insert(k, v);
        }
        Ok(map)
    }

    /// `[string list]`.
    pub fn string_list(&mut self) -> Result<Vec<String>, WireError> {
        let n = self.u16()?;
        (0..n).map(|_| self.string()).collect()
    }

    /// `[bytes map]` (custom payloads): read and discarded.
    pub fn skip_bytes_map(&mut self) -> Result<(), WireError> {
        let n = self.u16()?;
        for _ in 0..n {
            self.string()?;
            self.bytes()?;
        }
        Ok(())
    }
}

/// A growable response body.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a length that the protocol caps at `i32`; test data never exceeds it.
    pub fn len_i32(&mut self, len: usize) {
        self.i32(i32::try_from(len).unwrap_or(i32::MAX));
    }

    pub fn string(&mut self, s: &str) {
        self.u16(u16::try_from(s.len()).unwrap_or(u16::MAX));
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub fn short_bytes(&mut self, b: &[u8]) {
        self.u16(u16::try_from(b.len()).unwrap_or(u16::MAX));
        self.buf.extend_from_slice(b);
    }

    pub fn bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => {
                self.len_i32(b.len());
                self.buf.extend_from_slice(b);
            }
            None => self.i32(-1),
        }
    }

    pub fn string_multimap(&mut self, map: &[(&str, Vec<String>)]) {
        self.u16(u16::try_from(map.len()).unwrap_or(u16::MAX));
        for (k, vs) in map {
            self.string(k);
            self.u16(u16::try_from(vs.len()).unwrap_or(u16::MAX));
            for v in vs {
                self.string(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_distinguish_null_and_unset() {
        let mut w = Writer::new();
        w.i32(-1);
        w.i32(-2);
        w.bytes(Some(b"ab"));
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.value(), Ok(RawValue::Null));
        assert_eq!(r.value(), Ok(RawValue::Unset));
        assert_eq!(r.value(), Ok(RawValue::Bytes(b"ab".to_vec())));
        assert!(r.u8().is_err());
    }
}
