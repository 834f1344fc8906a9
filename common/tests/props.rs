//! Property tests of the parsers and sanitisers that see data from other machines: whatever
//! the input, they never panic and what they return keeps its promises.

use common::manifest::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, chunk_count};
use common::names::{printable, safe_file_name};
use common::units::parse_size;
use common::{Bitfield, Manifest, Sha256Digest};
use proptest::prelude::*;

/// Names built from the characters that make trouble, mixed with ordinary ones.
fn hostile_name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("\\".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just(" ".to_string()),
        Just("\0".to_string()),
        Just("\n".to_string()),
        Just("\u{1b}[31m".to_string()),
        Just("\u{7f}".to_string()),
        Just("\u{85}".to_string()),
        Just("CON".to_string()),
        Just("com1".to_string()),
        Just(".tar.gz".to_string()),
        Just("é".to_string()),
        Just("日本".to_string()),
        Just("🦀".to_string()),
        "[a-z]{1,40}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..80).prop_map(|v| v.concat())
}

fn assert_safe(name: &str) -> Result<(), TestCaseError> {
    prop_assert!(!name.is_empty());
    prop_assert!(name.len() <= 255, "{} bytes", name.len());
    prop_assert!(name != "." && name != "..");
    prop_assert!(!name.contains('/') && !name.contains('\\') && !name.contains('\0'));
    prop_assert!(!name.chars().any(char::is_control), "{name:?}");
    let p = std::path::Path::new(name);
    prop_assert_eq!(p.components().count(), 1, "{:?}", name);
    let joined = std::path::Path::new("/out").join(p);
    prop_assert_eq!(joined.parent(), Some(std::path::Path::new("/out")));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn safe_file_name_is_one_safe_component(s in any::<String>()) {
        assert_safe(&safe_file_name(&s))?;
    }

    #[test]
    fn safe_file_name_survives_hostile_names(s in hostile_name()) {
        let safe = safe_file_name(&s);
        assert_safe(&safe)?;
        // Sanitising is idempotent: a safe name stays as it is.
        prop_assert_eq!(safe_file_name(&safe), safe);
    }

    #[test]
    fn printable_has_no_control_chars(s in hostile_name(), max in 0usize..300) {
        let p = printable(&s, max);
        prop_assert!(!p.chars().any(char::is_control), "{p:?}");
        prop_assert!(p.chars().count() <= max.saturating_mul(10) + 1);
    }

    #[test]
    fn parse_size_never_panics(s in any::<String>()) {
        let _ = parse_size(&s);
    }

    #[test]
    fn parse_size_never_panics_on_size_like_text(
        s in "[ ]?[0-9.]{0,25}[ ]?(|b|B|k|K|kb|KiB|m|M|MB|MiB|g|G|GiB|t|T|TB|TiB|x|é)[ ]?"
    ) {
        let _ = parse_size(&s);
    }

    #[test]
    fn parse_size_round_trips_plain_integers(n in any::<u64>()) {
        prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
        prop_assert_eq!(parse_size(&format!(" {n}B ")), Ok(n));
    }

    #[test]
    fn parse_size_scales_integers_with_units(n in 0u64..1_000_000) {
        prop_assert_eq!(parse_size(&format!("{n}K")), Ok(n * 1_000));
        prop_assert_eq!(parse_size(&format!("{n}MiB")), Ok(n << 20));
    }

    #[test]
    fn from_parts_never_panics(
        name in any::<String>(),
        size in any::<u64>(),
        sha in any::<[u8; 32]>(),
        chunk_size in any::<u32>(),
        hashes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        if let Ok(m) = Manifest::from_parts(name, size, Sha256Digest(sha), chunk_size, &hashes) {
            prop_assert_eq!(u64::from(m.chunk_count()), chunk_count(m.size, m.chunk_size));
        }
    }

    #[test]
    fn from_parts_accepts_only_maps_that_add_up(
        name in hostile_name(),
        size in 0u64..(40 << 20),
        shift in 0u32..5,
        extra in -2i64..3,
    ) {
        let chunk_size = MIN_CHUNK_SIZE << shift;
        let want = chunk_count(size, chunk_size);
        let n = (want as i64 + extra).max(0) as usize;
        let hashes: Vec<u8> = (0..n * 32).map(|i| i as u8).collect();
        let r = Manifest::from_parts(name.clone(), size, Sha256Digest([1; 32]), chunk_size, &hashes);
        match r {
            Ok(m) => {
                prop_assert_eq!(n as u64, want);
                prop_assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&m.chunk_size));
                prop_assert_eq!(m.chunk_count() as usize, n);
                let mut end = 0;
                for i in 0..m.chunk_count() {
                    let r = m.chunk_range(i);
                    prop_assert_eq!(r.start, end);
                    prop_assert!(r.end > r.start && r.end - r.start <= u64::from(chunk_size));
                    end = r.end;
                }
                prop_assert_eq!(end, size);
                prop_assert_eq!(m.id(), m.clone().verified(&m.id()).unwrap().id());
            }
            Err(_) => prop_assert!(
                n as u64 != want || name.is_empty() || name.contains('\0') || name.len() > 4096,
                "refused a map that adds up"
            ),
        }
    }

    #[test]
    fn bitfield_from_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        len in prop_oneof![0u32..2400, any::<u32>()],
    ) {
        if let Ok(b) = Bitfield::from_bytes(&bytes, len) {
            prop_assert_eq!(b.len(), len);
            prop_assert!(b.count() <= b.len());
            prop_assert!(b.iter_ones().all(|i| i < len));
            prop_assert_eq!(b.iter_ones().count() as u32, b.count());
            prop_assert_eq!(Bitfield::from_bytes(b.as_bytes(), len), Ok(b.clone()));
        }
    }

    #[test]
    fn bitfield_from_bytes_of_the_right_length_always_parses(
        len in 0u32..2400,
        seed in any::<u8>(),
    ) {
        let bytes: Vec<u8> = (0..(len as usize).div_ceil(8)).map(|i| seed ^ i as u8).collect();
        let b = Bitfield::from_bytes(&bytes, len);
        prop_assert!(b.is_ok());
        prop_assert!(b.unwrap().count() <= len);
    }
}
