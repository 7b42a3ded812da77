//! ULIDs (<https://github.com/ulid/spec>), the names of block directories: 128 bits = 48-bit
//! Unix time in milliseconds (big-endian) then 80 random bits, written as 26 characters of
//! Crockford base32 (`0123456789ABCDEFGHJKMNPQRSTVWXYZ`, most significant bits first; the first
//! character carries 3 bits, so it is at most `7`).
//!
//! [`Ulid::generate`] takes its 80 random bits from the OS (`getrandom`);
//! [`Ulid::new`] builds one from given parts (tests, deterministic names).

use std::fmt;
use std::str::FromStr;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
pub const ULID_LEN: usize = 26;

/// A ULID, ordered like its text form (time first).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ulid(pub u128);

/// A string that is not a ULID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ULID {0:?}")]
pub struct UlidError(pub String);

impl Ulid {
    /// From a millisecond timestamp (low 48 bits used) and 80 random bits.
    pub fn new(ms: u64, random: [u8; 10]) -> Ulid {
        let mut r = [0u8; 16];
        r[6..].copy_from_slice(&random);
        let rand = u128::from_be_bytes(r);
        Ulid((u128::from(ms & 0xffff_ffff_ffff) << 80) | rand)
    }

    /// A new ULID for the time `ms`, random bits from the OS.
    pub fn generate(ms: u64) -> std::io::Result<Ulid> {
        let mut random = [0u8; 10];
        getrandom::fill(&mut random)?;
        Ok(Ulid::new(ms, random))
    }

    /// A new ULID for the current wall-clock time.
    pub fn generate_now() -> std::io::Result<Ulid> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ulid::generate(ms)
    }

    /// The millisecond timestamp.
    pub fn timestamp_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }
}

impl fmt::Display for Ulid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = [0u8; ULID_LEN];
        for (i, c) in s.iter_mut().enumerate() {
            let shift = 125 - 5 * i as u32;
            let idx = ((self.0 >> shift) & 31) as usize;
            *c = ALPHABET.get(idx).copied().unwrap_or(b'0');
        }
        f.write_str(std::str::from_utf8(&s).unwrap_or_default())
    }
}

impl fmt::Debug for Ulid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ulid({self})")
    }
}

impl FromStr for Ulid {
    type Err = UlidError;
    /// Case-insensitive, exactly 26 characters, first character at most `7`.
    fn from_str(s: &str) -> Result<Ulid, UlidError> {
        let err = || UlidError(s.to_string());
        if s.len() != ULID_LEN {
            return Err(err());
        }
        let mut v: u128 = 0;
        for (i, b) in s.bytes().enumerate() {
            let up = b.to_ascii_uppercase();
            let d = ALPHABET.iter().position(|&a| a == up).ok_or_else(err)? as u128;
            if i == 0 && d > 7 {
                return Err(err());
            }
            v = (v << 5) | d;
        }
        Ok(Ulid(v))
    }
}

impl serde::Serialize for Ulid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ulid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ulid, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn text_round_trips_and_carries_the_time() {
        // The ULID promtool wrote for the golden fixture.
        let u: Ulid = "01M7ZSK21PFE020YB522RYFSCY".parse().unwrap();
        assert_eq!(u.to_string(), "01M7ZSK21PFE020YB522RYFSCY");
        let lower: Ulid = "01m7zsk21pfe020yb522ryfscy".parse().unwrap();
        assert_eq!(lower, u);
        let g = Ulid::generate(u.timestamp_ms()).unwrap();
        assert_eq!(g.timestamp_ms(), u.timestamp_ms());
        assert_eq!(&g.to_string()[..10], "01M7ZSK21P");
        assert_ne!(Ulid::generate(5).unwrap(), Ulid::generate(5).unwrap());
        assert_eq!(
            Ulid::new(1, [0; 10]).to_string(),
            "0000000001".to_string() + &"0".repeat(16)
        );
        assert_eq!(Ulid(u128::MAX).to_string(), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        for bad in [
            "",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "01M7ZSK21PFE020YB522RYFSCU",
            "01M7ZSK21PFE020YB522RYFSC",
        ] {
            assert!(bad.parse::<Ulid>().is_err(), "{bad}");
        }
    }
}
