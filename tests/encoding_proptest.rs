//! The one byte-format codec (`tsdb::encoding`, used by WAL records, head chunk files, the
//! index and block files) against prost's varint codec as an oracle: every value round-trips,
//! lengths are what `uvarint_len` says, arbitrary bytes decode as prost decodes them or are
//! refused, and a `Cursor` over arbitrary bytes never panics, never moves past the end, and is
//! sticky: after the first getter that finds nothing, every later one finds nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cairn::tsdb::encoding::{
    put_uvarint, put_uvarint_str, put_varint, read_uvarint, uvarint_len, Cursor,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn uvarints_round_trip_with_prosts_bytes(x in any::<u64>()) {
        let mut ours = Vec::new();
        put_uvarint(&mut ours, x);
        let mut theirs = Vec::new();
        prost::encoding::encode_varint(x, &mut theirs);
        prop_assert_eq!(&ours, &theirs);
        prop_assert_eq!(ours.len(), uvarint_len(x));
        prop_assert_eq!(read_uvarint(&ours), Ok((x, ours.len())));
    }

    #[test]
    fn varints_and_strings_round_trip_through_a_cursor(
        v in any::<i64>(),
        s in "\\PC{0,40}",
        tail in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        put_uvarint_str(&mut b, &s);
        b.extend_from_slice(&tail);
        let mut c = Cursor::new(&b);
        prop_assert_eq!(c.varint(), Some(v));
        prop_assert_eq!(c.uvarint_str(), Some(s.as_str()));
        prop_assert_eq!(c.remaining(), tail.len());
    }

    #[test]
    fn arbitrary_bytes_decode_as_prost_decodes_them(b in prop::collection::vec(any::<u8>(), 0..12)) {
        let mut buf = &b[..];
        let theirs = prost::encoding::decode_varint(&mut buf).ok().map(|x| (x, b.len() - buf.len()));
        prop_assert_eq!(read_uvarint(&b).ok(), theirs);
    }

    #[test]
    fn a_cursor_over_arbitrary_bytes_never_panics(
        b in prop::collection::vec(any::<u8>(), 0..64),
        ops in prop::collection::vec(0u8..7, 0..32),
    ) {
        let mut c = Cursor::new(&b);
        let mut failed = false;
        for op in ops {
            let before = c.pos();
            let found = match op {
                0 => c.uvarint().is_some(),
                1 => c.varint().is_some(),
                2 => c.be32().is_some(),
                3 => c.be64().is_some(),
                4 => c.uvarint_bytes().is_some(),
                5 => c.uvarint_str().is_some(),
                _ => c.byte().is_some(),
            };
            prop_assert!(c.pos() <= b.len());
            if failed {
                prop_assert!(!found, "a getter found something after a failure");
                prop_assert_eq!(c.pos(), before);
            }
            failed |= !found;
            prop_assert_eq!(c.failed(), failed);
        }
    }
}
