//! Splitting values too large for one keyring entry (Windows: 2560 bytes) into parts, and joining them back.

use sha2::{Digest, Sha256};

/// A head entry that names its parts starts with this; stored records are JSON objects,
/// so they never do (and `split` wraps any value that would).
const MAGIC: &str = "pullsecret-chunks-v1 ";

/// How a value is laid out across entries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Split {
    /// What the entry under the value's own key holds: the value itself when it fits,
    /// else a header naming the parts.
    pub head: Vec<u8>,
    /// `(key suffix, bytes)` of each further entry, stored under `key + suffix`.
    pub parts: Vec<(String, Vec<u8>)>,
}

/// What a head entry says about its parts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub tag: String,
    pub count: usize,
    pub len: usize,
    pub digest: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkError {
    #[error("the entry limit of {0} bytes is too small to hold a chunk header")]
    LimitTooSmall(usize),
    #[error("damaged chunk header")]
    BadHeader,
    #[error("part {0} is missing")]
    MissingPart(usize),
    #[error("the parts do not match the header's length and digest (changed while read?)")]
    Mismatch,
}

/// Lays `value` out in entries of at most `max` bytes each.
///
/// Parts are keyed by a tag derived from the content, so a new value's parts never
/// overwrite the old value's: a reader holding the old head still finds the old parts,
/// and the head switch is the single write that commits the new value.
pub(crate) fn split(value: &[u8], max: usize) -> Result<Split, ChunkError> {
    if value.len() <= max && !value.starts_with(MAGIC.as_bytes()) {
        return Ok(Split {
            head: value.to_vec(),
            parts: Vec::new(),
        });
    }
    let digest = hex::encode(Sha256::digest(value));
    let tag = digest[..12].to_string();
    // The header's own size depends on the part count; the count needs at most 20 digits.
    let worst = format!("{MAGIC}{tag} {} {} {digest}\n", u64::MAX, value.len());
    if worst.len() > max || max == 0 {
        return Err(ChunkError::LimitTooSmall(max));
    }
    let parts: Vec<(String, Vec<u8>)> = value
        .chunks(max)
        .enumerate()
        .map(|(i, c)| (part_suffix(&tag, i + 1), c.to_vec()))
        .collect();
    let head = format!("{MAGIC}{tag} {} {} {digest}\n", parts.len(), value.len()).into_bytes();
    Ok(Split { head, parts })
}

/// The key suffix of part `index` (1-based) of the value tagged `tag`.
pub(crate) fn part_suffix(tag: &str, index: usize) -> String {
    format!("#{tag}.{index}")
}

/// `None` when `head` is a whole value, else what it says about the parts.
pub(crate) fn parse_header(head: &[u8]) -> Result<Option<Header>, ChunkError> {
    let Some(rest) = head.strip_prefix(MAGIC.as_bytes()) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(rest).map_err(|_| ChunkError::BadHeader)?;
    let mut fields = text.trim_end_matches('\n').split(' ');
    let (Some(tag), Some(count), Some(len), Some(digest), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ChunkError::BadHeader);
    };
    let count: usize = count.parse().map_err(|_| ChunkError::BadHeader)?;
    let len: usize = len.parse().map_err(|_| ChunkError::BadHeader)?;
    let hexlike = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if count == 0 || !hexlike(tag) || !hexlike(digest) {
        return Err(ChunkError::BadHeader);
    }
    Ok(Some(Header {
        tag: tag.to_string(),
        count,
        len,
        digest: digest.to_string(),
    }))
}

/// Reassembles a value from its head and a reader of parts (`Ok(None)` for a missing part).
pub(crate) fn join<E: From<ChunkError>>(
    head: &[u8],
    mut read_part: impl FnMut(&str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, E>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, E> {
    let Some(h) = parse_header(head)? else {
        return Ok(zeroize::Zeroizing::new(head.to_vec()));
    };
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(h.len));
    for i in 1..=h.count {
        let part = read_part(&part_suffix(&h.tag, i))?.ok_or(ChunkError::MissingPart(i))?;
        out.extend_from_slice(&part);
    }
    if out.len() != h.len || hex::encode(Sha256::digest(&out[..])) != h.digest {
        return Err(ChunkError::Mismatch.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn roundtrip(value: &[u8], max: usize) -> Split {
        let s = split(value, max).expect("split");
        assert!(s.head.len() <= max, "head {} > {max}", s.head.len());
        for (_, p) in &s.parts {
            assert!(p.len() <= max && !p.is_empty());
        }
        let parts: HashMap<String, Vec<u8>> = s.parts.iter().cloned().collect();
        let back = join::<ChunkError>(&s.head, |k| {
            Ok(parts.get(k).cloned().map(zeroize::Zeroizing::new))
        })
        .expect("join");
        assert_eq!(&back[..], value);
        s
    }

    #[test]
    fn small_values_stay_whole() {
        let s = roundtrip(br#"{"name":"a"}"#, 2560);
        assert!(s.parts.is_empty());
        assert_eq!(s.head, br#"{"name":"a"}"#);
        // Exactly at the limit still fits.
        assert!(roundtrip(&[b'x'; 2560], 2560).parts.is_empty());
    }

    #[test]
    fn large_values_split_at_the_windows_limit() {
        let value: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let s = roundtrip(&value, 2560);
        assert_eq!(s.parts.len(), 4);
        assert_eq!(roundtrip(&[b'y'; 2561], 2560).parts.len(), 2);
    }

    #[test]
    fn a_value_that_looks_like_a_header_is_wrapped() {
        let s = roundtrip(b"pullsecret-chunks-v1 abc 1 1 00\n", 2560);
        assert_eq!(s.parts.len(), 1);
    }

    #[test]
    fn new_content_gets_new_part_keys() {
        let a = split(&[b'a'; 6000], 2560).expect("a");
        let b = split(&[b'b'; 6000], 2560).expect("b");
        assert!(a
            .parts
            .iter()
            .all(|(k, _)| b.parts.iter().all(|(k2, _)| k != k2)));
    }

    #[test]
    fn damage_is_detected() {
        let s = split(&[b'z'; 6000], 2560).expect("split");
        let mut parts: HashMap<String, Vec<u8>> = s.parts.iter().cloned().collect();
        let read = |parts: &HashMap<String, Vec<u8>>| {
            join::<ChunkError>(&s.head, |k| {
                Ok(parts.get(k).cloned().map(zeroize::Zeroizing::new))
            })
            .map(|_| ())
        };
        let first = s.parts[0].0.clone();
        parts.get_mut(&first).expect("part")[0] = b'q';
        assert_eq!(read(&parts), Err(ChunkError::Mismatch));
        parts.remove(&first);
        assert_eq!(read(&parts), Err(ChunkError::MissingPart(1)));
        assert_eq!(
            parse_header(b"pullsecret-chunks-v1 zz 1 2"),
            Err(ChunkError::BadHeader)
        );
        assert_eq!(split(b"0123456789", 8), Err(ChunkError::LimitTooSmall(8)));
    }
}
