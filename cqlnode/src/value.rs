//! CQL types and values: how they are named in CQL text, identified on the wire, encoded in
//! `[bytes]`, and ordered (clustering order and range restrictions depend on the order).
//!
//! User tables may only use the scalar types of the supported subset; the collection types
//! exist because the driver's metadata queries read `system.local.tokens` (a set) and
//! `system_schema.keyspaces.replication` (a map).

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

use uuid::Uuid;

use crate::wire::Writer;

/// A column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CqlType {
    Ascii,
    Text,
    Int,
    BigInt,
    SmallInt,
    TinyInt,
    Boolean,
    Blob,
    Timestamp,
    Date,
    Uuid,
    TimeUuid,
    Double,
    Counter,
    /// Only in system tables.
    Inet,
    /// Only in system tables.
    List(Box<CqlType>),
    /// Only in system tables.
    Set(Box<CqlType>),
    /// Only in system tables.
    Map(Box<CqlType>, Box<CqlType>),
}

impl CqlType {
    /// Parses a scalar type name as written in `CREATE TABLE`.
    pub fn from_name(name: &str) -> Option<CqlType> {
        Some(match name.to_ascii_lowercase().as_str() {
            "ascii" => CqlType::Ascii,
            "text" | "varchar" => CqlType::Text,
            "int" => CqlType::Int,
            "bigint" => CqlType::BigInt,
            "smallint" => CqlType::SmallInt,
            "tinyint" => CqlType::TinyInt,
            "boolean" => CqlType::Boolean,
            "blob" => CqlType::Blob,
            "timestamp" => CqlType::Timestamp,
            "date" => CqlType::Date,
            "uuid" => CqlType::Uuid,
            "timeuuid" => CqlType::TimeUuid,
            "double" => CqlType::Double,
            "counter" => CqlType::Counter,
            _ => return None,
        })
    }

    /// The name written in `system_schema.columns.type`, which the driver parses back.
    pub fn cql_name(&self) -> String {
        match self {
            CqlType::Ascii => "ascii".into(),
            CqlType::Text => "text".into(),
            CqlType::Int => "int".into(),
            CqlType::BigInt => "bigint".into(),
            CqlType::SmallInt => "smallint".into(),
            CqlType::TinyInt => "tinyint".into(),
            CqlType::Boolean => "boolean".into(),
            CqlType::Blob => "blob".into(),
            CqlType::Timestamp => "timestamp".into(),
            CqlType::Date => "date".into(),
            CqlType::Uuid => "uuid".into(),
            CqlType::TimeUuid => "timeuuid".into(),
            CqlType::Double => "double".into(),
            CqlType::Counter => "counter".into(),
            CqlType::Inet => "inet".into(),
            CqlType::List(e) => format!("frozen<list<{}>>", e.cql_name()),
            CqlType::Set(e) => format!("frozen<set<{}>>", e.cql_name()),
            CqlType::Map(k, v) => format!("frozen<map<{}, {}>>", k.cql_name(), v.cql_name()),
        }
    }

    /// Writes the `[option]` that identifies this type in result and prepared metadata.
    pub fn write_option(&self, w: &mut Writer) {
        let id: u16 = match self {
            CqlType::Ascii => 0x0001,
            CqlType::BigInt => 0x0002,
            CqlType::Blob => 0x0003,
            CqlType::Boolean => 0x0004,
            CqlType::Counter => 0x0005,
            CqlType::Double => 0x0007,
            CqlType::Int => 0x0009,
            CqlType::Timestamp => 0x000B,
            CqlType::Uuid => 0x000C,
            CqlType::Text => 0x000D,
            CqlType::TimeUuid => 0x000F,
            CqlType::Inet => 0x0010,
            CqlType::Date => 0x0011,
            CqlType::SmallInt => 0x0013,
            CqlType::TinyInt => 0x0014,
            CqlType::List(_) => 0x0020,
            CqlType::Map(_, _) => 0x0021,
            CqlType::Set(_) => 0x0022,
        };
        w.u16(id);
        match self {
            CqlType::List(e) | CqlType::Set(e) => e.write_option(w),
            CqlType::Map(k, v) => {
                k.write_option(w);
                v.write_option(w);
            }
            _ => {}
        }
    }

    /// Decodes a value of this type from its `[bytes]` content.
    pub fn decode(&self, b: &[u8]) -> Result<Value, String> {
        fn fixed<const N: usize>(b: &[u8], ty: &CqlType) -> Result<[u8; N], String> {
            <[u8; N]>::try_from(b).map_err(|_| {
                format!(
                    "expected {N} bytes for a {} value, got {}",
                    ty.cql_name(),
                    b.len()
                )
            })
        }
        Ok(match self {
            CqlType::Ascii | CqlType::Text => Value::Text(
                String::from_utf8(b.to_vec()).map_err(|_| "text value is not UTF-8".to_string())?,
            ),
            CqlType::Int => Value::Int(i32::from_be_bytes(fixed(b, self)?)),
            CqlType::BigInt => Value::BigInt(i64::from_be_bytes(fixed(b, self)?)),
            CqlType::Counter => Value::Counter(i64::from_be_bytes(fixed(b, self)?)),
            CqlType::Timestamp => Value::Timestamp(i64::from_be_bytes(fixed(b, self)?)),
            CqlType::SmallInt => Value::SmallInt(i16::from_be_bytes(fixed(b, self)?)),
            CqlType::TinyInt => Value::TinyInt(i8::from_be_bytes(fixed(b, self)?)),
            CqlType::Date => Value::Date(u32::from_be_bytes(fixed(b, self)?)),
            CqlType::Double => Value::Double(f64::from_be_bytes(fixed(b, self)?)),
            CqlType::Boolean => Value::Boolean(fixed::<1>(b, self)?[0] != 0),
            CqlType::Blob => Value::Blob(b.to_vec()),
            CqlType::Uuid => Value::Uuid(Uuid::from_bytes(fixed(b, self)?)),
            CqlType::TimeUuid => Value::TimeUuid(Uuid::from_bytes(fixed(b, self)?)),
            CqlType::Inet => match b.len() {
                4 => Value::Inet(IpAddr::from(fixed::<4>(b, self)?)),
                16 => Value::Inet(IpAddr::from(fixed::<16>(b, self)?)),
                n => return Err(format!("invalid inet length {n}")),
            },
            CqlType::List(e) | CqlType::Set(e) => {
                let items = decode_elements(b, 1)?
                    .into_iter()
                    .map(|mut parts| e.decode(&parts.remove(0)))
                    .collect::<Result<Vec<_>, _>>()?;
                if matches!(self, CqlType::List(_)) {
                    Value::List(items)
                } else {
                    Value::Set(items)
                }
            }
            CqlType::Map(k, v) => {
                let pairs = decode_elements(b, 2)?
                    .into_iter()
                    .map(|parts| Ok((k.decode(&parts[0])?, v.decode(&parts[1])?)))
                    .collect::<Result<Vec<_>, String>>()?;
                Value::Map(pairs)
            }
        })
    }
}

/// Splits a serialized collection (`[int] n` then `n * arity` `[bytes]`) into its elements.
fn decode_elements(b: &[u8], arity: usize) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let mut r = crate::wire::Reader::new(b);
    let n = r.i32().map_err(|e| e.0)?;
    let n = usize::try_from(n).map_err(|_| "negative collection size".to_string())?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let mut parts = Vec::with_capacity(arity);
        for _ in 0..arity {
            let part = r
                .bytes()
                .map_err(|e| e.0)?
                .ok_or_else(|| "null inside a collection".to_string())?;
            parts.push(part);
        }
        out.push(parts);
    }
    Ok(out)
}

impl fmt::Display for CqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cql_name())
    }
}

/// A non-null cell value. Nulls are `None` wherever a cell may be absent.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `text`, `varchar` and `ascii`.
    Text(String),
    Int(i32),
    BigInt(i64),
    SmallInt(i16),
    TinyInt(i8),
    Boolean(bool),
    Blob(Vec<u8>),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    /// Days since the epoch, offset by 2^31 (the wire form).
    Date(u32),
    Uuid(Uuid),
    TimeUuid(Uuid),
    Double(f64),
    Counter(i64),
    Inet(IpAddr),
    List(Vec<Value>),
    Set(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The `[bytes]` content of this value.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Value::Text(s) => s.as_bytes().to_vec(),
            Value::Int(v) => v.to_be_bytes().to_vec(),
            Value::BigInt(v) | Value::Counter(v) | Value::Timestamp(v) => v.to_be_bytes().to_vec(),
            Value::SmallInt(v) => v.to_be_bytes().to_vec(),
            Value::TinyInt(v) => v.to_be_bytes().to_vec(),
            Value::Boolean(v) => vec![u8::from(*v)],
            Value::Blob(b) => b.clone(),
            Value::Date(v) => v.to_be_bytes().to_vec(),
            Value::Uuid(u) | Value::TimeUuid(u) => u.as_bytes().to_vec(),
            Value::Double(v) => v.to_be_bytes().to_vec(),
            Value::Inet(IpAddr::V4(a)) => a.octets().to_vec(),
            Value::Inet(IpAddr::V6(a)) => a.octets().to_vec(),
            Value::List(items) | Value::Set(items) => {
                let mut w = Writer::new();
                w.len_i32(items.len());
                for item in items {
                    w.bytes(Some(&item.encode()));
                }
                w.buf
            }
            Value::Map(pairs) => {
                let mut w = Writer::new();
                w.len_i32(pairs.len());
                for (k, v) in pairs {
                    w.bytes(Some(&k.encode()));
                    w.bytes(Some(&v.encode()));
                }
                w.buf
            }
        }
    }

    /// Integer content, for counters, `LIMIT`, `TTL` and token bounds.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(i64::from(*v)),
            Value::BigInt(v) | Value::Counter(v) | Value::Timestamp(v) => Some(*v),
            Value::SmallInt(v) => Some(i64::from(*v)),
            Value::TinyInt(v) => Some(i64::from(*v)),
            _ => None,
        }
    }

    /// Text content, if this is a text value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// Orders two values of the same column type the way Cassandra compares them: numbers
/// numerically, text and blobs bytewise, timeuuids by time then bytes, uuids bytewise
/// (a simplification of Cassandra's version-aware `UUIDType` order).
pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Double(x), Value::Double(y)) => x.total_cmp(y),
        (Value::Boolean(x), Value::Boolean(y)) => x.cmp(y),
        (Value::Blob(x), Value::Blob(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::Uuid(x), Value::Uuid(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::TimeUuid(x), Value::TimeUuid(y)) => {
            let time = |u: &Uuid| u.get_timestamp().map(|t| t.to_gregorian().0).unwrap_or(0);
            time(x)
                .cmp(&time(y))
                .then_with(|| x.as_bytes().cmp(y.as_bytes()))
        }
        (Value::Inet(x), Value::Inet(y)) => x.cmp(y),
        (Value::List(x), Value::List(y)) | (Value::Set(x), Value::Set(y)) => {
            for (p, q) in x.iter().zip(y) {
                let o = compare(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            // Values of different types never meet in one column; any stable order will do.
            _ => a.encode().cmp(&b.encode()),
        },
    }
}

/// A value wrapped so that `BTreeMap` keys sort in clustering order (`desc` reverses).
#[derive(Debug, Clone)]
pub struct KeyPart {
    pub value: Value,
    pub desc: bool,
}

impl PartialEq for KeyPart {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for KeyPart {}
impl PartialOrd for KeyPart {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for KeyPart {
    fn cmp(&self, other: &Self) -> Ordering {
        let o = compare(&self.value, &other.value);
        if self.desc { o.reverse() } else { o }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_round_trip() {
        let cases = [
            (CqlType::Text, Value::Text("héllo".into())),
            (CqlType::Int, Value::Int(-7)),
            (CqlType::BigInt, Value::BigInt(1 << 40)),
            (CqlType::Boolean, Value::Boolean(true)),
            (CqlType::Double, Value::Double(1.5)),
            (CqlType::Uuid, Value::Uuid(Uuid::nil())),
            (
                CqlType::Map(Box::new(CqlType::Text), Box::new(CqlType::Text)),
                Value::Map(vec![(Value::Text("a".into()), Value::Text("b".into()))]),
            ),
        ];
        for (ty, v) in cases {
            assert_eq!(ty.decode(&v.encode()), Ok(v));
        }
        assert!(CqlType::Int.decode(&[1, 2]).is_err());
    }

    #[test]
    fn desc_key_parts_reverse() {
        let a = KeyPart {
            value: Value::Int(1),
            desc: true,
        };
        let b = KeyPart {
            value: Value::Int(2),
            desc: true,
        };
        assert!(a > b);
    }
}
