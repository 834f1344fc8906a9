//! Property tests of the parsers and sanitisers that see data from other machines: whatever
//! the input, they never panic and what they return keeps its promises.

use common::manifest::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, chunk_count};
use common::names::{printable, safe_file_name};
use common::ticket::{SIGNATURE_LEN, TicketClaims, TicketSigner};
use common::units::{RateParseError, parse_rate, parse_size};
use common::{Bitfield, FileId, Manifest, PeerId, Sha256Digest, Ticket};
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
    fn parse_rate_never_panics(s in any::<String>()) {
        let _ = parse_rate(&s);
    }

    #[test]
    fn parse_rate_never_panics_on_rate_like_text(
        s in "[ ]?[0-9.]{0,25}[ ]?(|b|K|kb|KiB|M|MB|MiB|G|GiB|T|TiB|x|é)(|/s|/S|/|s|/s/s)[ ]?"
    ) {
        if let Ok(v) = parse_rate(&s) {
            prop_assert!(v > 0, "{s:?} gave a zero rate");
        }
    }

    #[test]
    fn parse_rate_is_parse_size_per_second(
        n in 0u64..(1 << 40),
        unit in prop_oneof![
            Just(""), Just("B"), Just("K"), Just("kb"), Just("M"), Just("MB"), Just("MiB"),
            Just("G"), Just("GiB"), Just("T"), Just("TiB"),
        ],
        per_second in any::<bool>(),
    ) {
        let size = parse_size(&format!("{n}{unit}"));
        let rate = parse_rate(&format!("{n}{unit}{}", if per_second { "/s" } else { "" }));
        match size {
            Ok(0) => prop_assert_eq!(rate, Err(RateParseError::Zero)),
            Ok(v) => prop_assert_eq!(rate, Ok(v)),
            Err(e) => prop_assert_eq!(rate, Err(RateParseError::Size(e))),
        }
    }

    #[test]
    fn file_id_parsing_never_panics_and_round_trips(
        s in prop_oneof![any::<String>(), "[0-9a-fA-F]{63,65}"],
    ) {
        if let Ok(id) = s.parse::<FileId>() {
            prop_assert_eq!(id.to_string(), s.to_ascii_lowercase());
            prop_assert_eq!(id.to_string().parse::<FileId>(), Ok(id));
        } else {
            prop_assert!(
                s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()),
                "refused a valid file id {s:?}"
            );
        }
    }

    #[test]
    fn file_ids_of_any_digest_round_trip(bytes in any::<[u8; 32]>(), upper in any::<bool>()) {
        let id = FileId(Sha256Digest(bytes));
        let text = id.to_string();
        prop_assert_eq!(text.len(), 64);
        prop_assert_eq!(text.parse::<FileId>(), Ok(id));
        if upper {
            prop_assert_eq!(text.to_ascii_uppercase().parse::<FileId>(), Ok(id));
        }
        prop_assert!(text[..63].parse::<FileId>().is_err());
        let longer = format!("{text}0");
        prop_assert!(longer.parse::<FileId>().is_err());
    }

    #[test]
    fn peer_id_parsing_never_panics_and_round_trips(
        s in prop_oneof![any::<String>(), "[0-9a-fA-F]{30,34}"],
    ) {
        if let Ok(id) = s.parse::<PeerId>() {
            prop_assert_eq!(id.as_str(), s.as_str());
            prop_assert_eq!(id.to_string().parse::<PeerId>(), Ok(id));
        } else {
            prop_assert!(
                s.len() != 32 || s.bytes().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "refused a valid peer id {s:?}"
            );
        }
    }

    #[test]
    fn peer_ids_of_any_bytes_round_trip(bytes in any::<[u8; 16]>()) {
        let id = PeerId::from_random(bytes);
        let text = id.to_string();
        prop_assert_eq!(text.parse::<PeerId>(), Ok(id.clone()));
        // Peer ids are lowercase only: an uppercase spelling is another (refused) text.
        if text.bytes().any(|b| b.is_ascii_alphabetic()) {
            prop_assert!(text.to_ascii_uppercase().parse::<PeerId>().is_err());
        }
    }

    #[test]
    fn ticket_from_parts_never_panics(
        file_id in prop_oneof![any::<String>(), "[0-9a-f]{64}"],
        peer_id in prop_oneof![any::<String>(), Just(String::new()), "[0-9a-f]{32}"],
        key in prop::collection::vec(any::<u8>(), 30..34),
        user in any::<String>(),
        expires_at_ms in any::<i64>(),
        signature in prop::collection::vec(any::<u8>(), 0..130),
    ) {
        let r = Ticket::from_parts(&file_id, &key, &peer_id, user.clone(), expires_at_ms, &signature);
        let parts_ok = file_id.parse::<FileId>().is_ok()
            && key.len() == 32
            && (peer_id.is_empty() || peer_id.parse::<PeerId>().is_ok())
            && signature.len() == SIGNATURE_LEN;
        prop_assert_eq!(r.is_ok(), parts_ok);
        if let Ok(t) = r {
            prop_assert_eq!(t.claims.user, user);
            prop_assert_eq!(t.claims.expires_at_ms, expires_at_ms);
            prop_assert_eq!(t.claims.peer_id.is_none(), peer_id.is_empty());
            prop_assert_eq!(&t.signature[..], &signature[..]);
        }
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

proptest! {
    // Ed25519 signing is slow unoptimised: fewer cases, each a full sign-and-verify.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn signed_tickets_round_trip_through_their_wire_parts(
        seed in any::<[u8; 32]>(),
        file in any::<[u8; 32]>(),
        key in any::<[u8; 32]>(),
        peer in prop::option::of(any::<[u8; 16]>()),
        user in any::<String>(),
        expires_at_ms in any::<i64>(),
    ) {
        let signer = TicketSigner::from_secret(&seed);
        let claims = TicketClaims {
            file_id: FileId(Sha256Digest(file)),
            key,
            peer_id: peer.map(PeerId::from_random),
            user,
            expires_at_ms,
        };
        let sent = signer.sign(claims.clone());
        let peer_text = claims.peer_id.as_ref().map_or(String::new(), ToString::to_string);
        let got = Ticket::from_parts(
            &claims.file_id.to_string(),
            &claims.key,
            &peer_text,
            claims.user.clone(),
            claims.expires_at_ms,
            &sent.signature,
        );
        prop_assert_eq!(got.as_ref(), Ok(&sent));
        let got = got.unwrap();
        // Verified just before its expiry; refused once altered.
        let now = expires_at_ms.saturating_sub(1);
        prop_assert!(signer.verifier().verify(&got, &claims.file_id, now).is_ok());
        let mut altered = got.clone();
        altered.claims.expires_at_ms = expires_at_ms.wrapping_add(1);
        prop_assert!(signer.verifier().verify(&altered, &claims.file_id, now).is_err());
    }
}
