//! Scalar value types of the YAML formats: addresses, byte sizes, durations, and `Located<T>`,
//! which remembers where in the file a value was written.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value and the line/column (1-based) where it starts in its YAML file. Line 0 means the value
/// did not come from a file (built in code).
#[derive(Clone, Debug)]
pub struct Located<T> {
    pub value: T,
    pub line: u32,
    pub column: u32,
}

impl<T> Located<T> {
    pub fn new(value: T) -> Self {
        Located { value, line: 0, column: 0 }
    }
    pub fn at(value: T, line: u32, column: u32) -> Self {
        Located { value, line, column }
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<T: Eq> Eq for Located<T> {}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        let loc = s.referenced;
        Ok(Located { value: s.value, line: loc.line() as u32, column: loc.column() as u32 })
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// Parse a number written as hex (`0x0800_0000`), binary (`0b1010`) or decimal (`4096`);
/// underscores separate digit groups. `what` names the value in the error ("address", "size").
pub fn parse_u32(text: &str, what: &str) -> Result<u32, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("bad {what} ``: empty"));
    }
    let (digits, radix, prefix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16, "0x")
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        (b, 2, "0b")
    } else {
        (t, 10, "")
    };
    let kind = match radix {
        16 => "hexadecimal",
        2 => "binary",
        _ => "decimal",
    };
    let cleaned: String = digits.chars().filter(|c| *c != '_').collect();
    if cleaned.is_empty() {
        return Err(format!("bad {what} `{t}`: no digits after `{prefix}`"));
    }
    if let Some(bad) = cleaned.chars().find(|c| !c.is_digit(radix)) {
        return Err(format!("bad {what} `{t}`: `{bad}` is not a {kind} digit"));
    }
    u32::from_str_radix(&cleaned, radix).map_err(|_| format!("bad {what} `{t}`: does not fit in 32 bits"))
}

/// A 32-bit bus address. YAML: an integer or a string such as `0x0800_8000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub u32);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

impl FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_u32(s, "address").map(Address)
    }
}

struct U32Visitor(&'static str);

impl Visitor<'_> for U32Visitor {
    type Value = u32;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an {} (integer or string like 0x0800_0000)", self.0)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom(format!("bad {} {v:#x}: does not fit in 32 bits", self.0)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom(format!("bad {} {v}: must be between 0 and 0xFFFF_FFFF", self.0)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        parse_u32(v, self.0).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(U32Visitor("address")).map(Address)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

const NUMBER_PATTERN: &str = "^(0[xX][0-9a-fA-F_]+|0[bB][01_]+|[0-9_]+)$";

impl JsonSchema for Address {
    fn schema_name() -> Cow<'static, str> {
        "Address".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A 32-bit address: an integer, or a string in hex (0x0800_8000), binary or decimal; underscores allowed.",
            "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": 4294967295u32 },
                { "type": "string", "pattern": NUMBER_PATTERN }
            ]
        })
    }
}

/// A size in bytes. YAML: an integer, hex string, or with a unit: `2K`/`2KiB` (x1024), `1M`/`1MiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteSize(pub u32);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (num, mult) = if let Some(n) = t.strip_suffix("KiB").or_else(|| t.strip_suffix('K')) {
            (n, 1024u64)
        } else if let Some(n) = t.strip_suffix("MiB").or_else(|| t.strip_suffix('M')) {
            (n, 1024 * 1024)
        } else {
            (t, 1)
        };
        let n = parse_u32(num, "size").map_err(|e| e.replace(&format!("`{}`", num.trim()), &format!("`{t}`")))?;
        u32::try_from(n as u64 * mult).map(ByteSize).map_err(|_| format!("bad size `{t}`: does not fit in 32 bits"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes (integer, 0x800, 2K, 64KiB)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                U32Visitor("size").visit_u64(v).map(ByteSize)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                U32Visitor("size").visit_i64(v).map(ByteSize)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: an integer, a hex string, or with a K/KiB/M/MiB suffix (64K).",
            "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": 4294967295u32 },
                { "type": "string", "pattern": "^(0[xX][0-9a-fA-F_]+|[0-9_]+)(K|KiB|M|MiB)?$" }
            ]
        })
    }
}

/// A duration with a unit: `250ms`, `2s`, `1.5s`, `100us`, `1m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub fn std(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit_ns: f64 = match unit.trim() {
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" | "min" => 60e9,
            "" => return Err(format!("bad duration `{t}`: needs a unit (us, ms, s, m), e.g. `500ms`")),
            other => return Err(format!("bad duration `{t}`: unknown unit `{other}` (use us, ms, s or m)")),
        };
        let value: f64 = num.parse().map_err(|_| format!("bad duration `{t}`: `{num}` is not a number"))?;
        let ns = value * unit_ns;
        if !(0.0..=1e9 * 86_400.0).contains(&ns) {
            return Err(format!("bad duration `{t}`: must be between 0 and 24 hours"));
        }
        Ok(Duration(std::time::Duration::from_nanos(ns.round() as u64)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        if ns.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", ns / 1_000_000_000)
        } else if ns.is_multiple_of(1_000_000) {
            write!(f, "{}ms", ns / 1_000_000)
        } else {
            write!(f, "{}us", ns / 1_000)
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like 500ms or 2s")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!("bad duration `{v}`: needs a unit (us, ms, s, m), e.g. `{v}ms`")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!("bad duration `{v}`: needs a unit (us, ms, s, m), e.g. `{v}s`")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration with a unit: us, ms, s or m (500ms, 2s, 1.5s).",
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)?(us|µs|ms|s|m|min)$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_every_notation() {
        assert_eq!("0x0800_8000".parse::<Address>().unwrap(), Address(0x0800_8000));
        assert_eq!("134217728".parse::<Address>().unwrap(), Address(0x0800_0000));
        assert_eq!("0b100".parse::<Address>().unwrap(), Address(4));
        assert_eq!(Address(0x0800_0000).to_string(), "0x08000000");
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        assert_eq!(
            "0x0800_000G".parse::<Address>().unwrap_err(),
            "bad address `0x0800_000G`: `G` is not a hexadecimal digit"
        );
        assert_eq!(
            "0x1_0000_0000".parse::<Address>().unwrap_err(),
            "bad address `0x1_0000_0000`: does not fit in 32 bits"
        );
        assert_eq!("0x".parse::<Address>().unwrap_err(), "bad address `0x`: no digits after `0x`");
        assert_eq!("12a".parse::<Address>().unwrap_err(), "bad address `12a`: `a` is not a decimal digit");
    }

    #[test]
    fn sizes_with_units() {
        assert_eq!("64K".parse::<ByteSize>().unwrap(), ByteSize(65536));
        assert_eq!("2KiB".parse::<ByteSize>().unwrap(), ByteSize(2048));
        assert_eq!("0x800".parse::<ByteSize>().unwrap(), ByteSize(2048));
        assert_eq!("1M".parse::<ByteSize>().unwrap(), ByteSize(1 << 20));
        assert_eq!("5000M".parse::<ByteSize>().unwrap_err(), "bad size `5000M`: does not fit in 32 bits");
        assert_eq!("6Q".parse::<ByteSize>().unwrap_err(), "bad size `6Q`: `Q` is not a decimal digit");
    }

    #[test]
    fn durations_need_units() {
        assert_eq!("500ms".parse::<Duration>().unwrap(), Duration::from_millis(500));
        assert_eq!("1.5s".parse::<Duration>().unwrap(), Duration::from_millis(1500));
        assert_eq!("2m".parse::<Duration>().unwrap(), Duration::from_millis(120_000));
        assert_eq!("100us".parse::<Duration>().unwrap().0.as_micros(), 100);
        assert!("500".parse::<Duration>().unwrap_err().contains("needs a unit"));
        assert!("5h".parse::<Duration>().unwrap_err().contains("unknown unit `h`"));
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(Duration::from_millis(2000).to_string(), "2s");
    }
}
