//! Synod's backup file: a point-in-time image of one member's applied state, as
//! Maintenance.Snapshot streams it (`etcdctl snapshot save`, `synodctl snapshot save`,
//! `GET /v1/snapshot`) and `synod restore` reads it. The format is documented for operators in
//! `docs/backup.md`; this module is its one implementation (pure: bytes in, bytes out).
//!
//! Layout, every integer little-endian:
//!
//! ```text
//! offset  size  field
//! 0       8     magic "SYNODBAK"
//! 8       4     format version (1)
//! 12      1     engine name length E (1..=32)
//! 13      E     engine name, ASCII ("omnipaxos", "vr", "epaxos")
//! 13+E    8     cluster id of the cluster the image came from
//!         8     member id it was taken on
//!         8     applied index
//!         8     revision
//!         8     compact revision
//!         8     keys
//!         8     payload length P
//!         4     CRC-32C of every header byte before it
//!         P     payload: the replica layer's state image (KV store with its MVCC history,
//!               compact revision, leases and sessions; the command-origin window; the
//!               membership configuration), as checkpoints hold it
//!         4     CRC-32C of the payload
//!         0-511 zero bytes: padding to a multiple of 512 bytes
//!         32    SHA-256 of every byte before it
//! ```
//!
//! Why two CRCs: a damaged header and a damaged payload are told apart in the error, and a
//! header that decodes is trusted for its payload length before the (possibly large) payload
//! is checked. Why the padding and the SHA-256: etcd's snapshot stream ends with a SHA-256 of
//! what precedes it, and `etcdctl snapshot save` (3.4) refuses a stream whose length is not
//! 32 more than a multiple of 512 ("sha256 checksum not found"); with this trailer a Synod
//! backup is saved by an unchanged etcdctl, and the digest covers the whole file. The padding
//! must be zeros and anything else after the payload checksum is refused, so a file cannot
//! carry unchecked bytes.

use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// What an engine hands over for a backup: its applied state serialised (the payload) and the
/// facts the header repeats. The node adds the engine name, cluster and member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupImage {
    pub applied_index: u64,
    pub revision: u64,
    pub compact_revision: u64,
    pub keys: u64,
    pub state: Arc<Vec<u8>>,
}

/// The first eight bytes of every backup file.
pub const BACKUP_MAGIC: [u8; 8] = *b"SYNODBAK";
/// The format this code writes and the only one it reads.
pub const BACKUP_FORMAT_VERSION: u32 = 1;
/// Longest engine name a header may carry.
pub const BACKUP_ENGINE_NAME_BYTES_MAX: usize = 32;
/// The file before the SHA-256 trailer is padded to a multiple of this (etcd's rule).
pub const BACKUP_ALIGN_BYTES: usize = 512;
/// Length of the SHA-256 trailer.
pub const BACKUP_SHA256_BYTES: usize = 32;

/// What a backup says about itself (everything but the payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    pub engine: String,
    pub cluster_id: u64,
    pub member_id: u64,
    pub applied_index: u64,
    pub revision: u64,
    pub compact_revision: u64,
    pub keys: u64,
}

/// A decoded backup: its header and the state image it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    pub header: BackupHeader,
    pub payload: Vec<u8>,
    /// The payload's CRC-32C as stored (and verified).
    pub payload_crc32c: u32,
    /// The whole file's SHA-256 trailer as stored (and verified).
    pub sha256: [u8; 32],
}

/// Why a file is not a usable backup. Each names what is wrong; none is a panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupError {
    /// Shorter than a header, or shorter than the payload its header announces.
    Truncated { needed_bytes: u64, have_bytes: u64 },
    /// Not a Synod backup at all (e.g. an etcd bbolt snapshot).
    BadMagic { found: [u8; 8] },
    /// Written by another version of this format.
    UnsupportedVersion { found: u32 },
    /// The header's checksum does not match: the header is damaged.
    HeaderChecksum { stored: u32, computed: u32 },
    /// The payload's checksum does not match: the state image is damaged.
    PayloadChecksum { stored: u32, computed: u32 },
    /// What follows the payload checksum is not zero padding to a 512-byte boundary and a
    /// SHA-256 trailer.
    BadTrailer(String),
    /// The SHA-256 trailer does not match the file.
    Sha256Mismatch,
    /// A header field is out of range (engine name length, non-ASCII name).
    BadHeader(String),
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Truncated {
                needed_bytes,
                have_bytes,
            } => write!(
                f,
                "truncated backup: {have_bytes} bytes, at least {needed_bytes} needed"
            ),
            BackupError::BadMagic { found } => write!(
                f,
                "not a Synod backup: the file starts with {found:02x?}, not \"SYNODBAK\" (an etcd \
                 snapshot cannot be restored into Synod)"
            ),
            BackupError::UnsupportedVersion { found } => write!(
                f,
                "unsupported backup format version {found} (this synod reads version \
                 {BACKUP_FORMAT_VERSION})"
            ),
            BackupError::HeaderChecksum { stored, computed } => write!(
                f,
                "corrupt backup header: CRC-32C {computed:08x}, the header says {stored:08x}"
            ),
            BackupError::PayloadChecksum { stored, computed } => write!(
                f,
                "corrupt backup payload: CRC-32C {computed:08x}, the file says {stored:08x}"
            ),
            BackupError::BadTrailer(why) => write!(f, "corrupt backup trailer: {why}"),
            BackupError::Sha256Mismatch => {
                f.write_str("corrupt backup: the SHA-256 at its end does not match the file")
            }
            BackupError::BadHeader(why) => write!(f, "corrupt backup header: {why}"),
        }
    }
}

impl std::error::Error for BackupError {}

/// Encodes a backup file: header, `payload`, checksums.
pub fn encode_backup(header: &BackupHeader, payload: &[u8]) -> Vec<u8> {
    let engine = header.engine.as_bytes();
    assert!(
        !engine.is_empty() && engine.len() <= BACKUP_ENGINE_NAME_BYTES_MAX,
        "engine names are short constants"
    );
    let mut out = Vec::with_capacity(header_len(engine.len()) + payload.len() + 4);
    out.extend_from_slice(&BACKUP_MAGIC);
    out.extend_from_slice(&BACKUP_FORMAT_VERSION.to_le_bytes());
    out.push(engine.len() as u8);
    out.extend_from_slice(engine);
    for x in [
        header.cluster_id,
        header.member_id,
        header.applied_index,
        header.revision,
        header.compact_revision,
        header.keys,
        payload.len() as u64,
    ] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.resize(out.len().next_multiple_of(BACKUP_ALIGN_BYTES), 0);
    let sha: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&sha);
    out
}

/// Bytes of a header with an engine name of `engine_bytes`, its checksum included.
fn header_len(engine_bytes: usize) -> usize {
    8 + 4 + 1 + engine_bytes + 7 * 8 + 4
}

/// Reads little-endian integers off the front of a slice whose length was checked.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4));
        u32::from_le_bytes(b)
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8));
        u64::from_le_bytes(b)
    }
}

fn truncated(needed: usize, have: usize) -> BackupError {
    BackupError::Truncated {
        needed_bytes: needed as u64,
        have_bytes: have as u64,
    }
}

/// Decodes and verifies the header only; returns it with the payload length and the header's
/// size. Checks the magic and version before anything else, so a foreign file is named as such.
pub fn decode_backup_header(bytes: &[u8]) -> Result<(BackupHeader, u64, usize), BackupError> {
    if bytes.len() < 8 {
        return Err(truncated(header_len(1), bytes.len()));
    }
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&bytes[..8]);
    if magic != BACKUP_MAGIC {
        return Err(BackupError::BadMagic { found: magic });
    }
    if bytes.len() < 13 {
        return Err(truncated(header_len(1), bytes.len()));
    }
    let mut r = Reader(&bytes[8..]);
    let version = r.u32();
    if version != BACKUP_FORMAT_VERSION {
        return Err(BackupError::UnsupportedVersion { found: version });
    }
    let name_len = usize::from(r.take(1)[0]);
    let len = header_len(name_len);
    if bytes.len() < len {
        return Err(truncated(len, bytes.len()));
    }
    let stored = u32::from_le_bytes([
        bytes[len - 4],
        bytes[len - 3],
        bytes[len - 2],
        bytes[len - 1],
    ]);
    let computed = crc32c::crc32c(&bytes[..len - 4]);
    if stored != computed {
        return Err(BackupError::HeaderChecksum { stored, computed });
    }
    // The checksum held, so out-of-range fields were written that way: say which.
    if name_len == 0 || name_len > BACKUP_ENGINE_NAME_BYTES_MAX {
        return Err(BackupError::BadHeader(format!(
            "engine name of {name_len} bytes"
        )));
    }
    let engine = std::str::from_utf8(r.take(name_len))
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| BackupError::BadHeader("engine name is not ASCII".into()))?
        .to_string();
    let header = BackupHeader {
        engine,
        cluster_id: r.u64(),
        member_id: r.u64(),
        applied_index: r.u64(),
        revision: r.u64(),
        compact_revision: r.u64(),
        keys: r.u64(),
    };
    let payload_len = r.u64();
    Ok((header, payload_len, len))
}

/// Decodes and verifies a whole backup file.
pub fn decode_backup(bytes: &[u8]) -> Result<Backup, BackupError> {
    let (header, payload_len, start) = decode_backup_header(bytes)?;
    let unpadded = (start as u64).saturating_add(payload_len).saturating_add(4);
    let needed = unpadded
        .next_multiple_of(BACKUP_ALIGN_BYTES as u64)
        .saturating_add(BACKUP_SHA256_BYTES as u64);
    if (bytes.len() as u64) < needed {
        return Err(BackupError::Truncated {
            needed_bytes: needed,
            have_bytes: bytes.len() as u64,
        });
    }
    if bytes.len() as u64 > needed {
        return Err(BackupError::BadTrailer(format!(
            "{} unexpected bytes at the end",
            bytes.len() as u64 - needed
        )));
    }
    // `needed == bytes.len()`, so every offset below fits in memory.
    let end = start + payload_len as usize;
    let payload = &bytes[start..end];
    let mut r = Reader(&bytes[end..]);
    let stored = r.u32();
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(BackupError::PayloadChecksum { stored, computed });
    }
    let sha_at = bytes.len() - BACKUP_SHA256_BYTES;
    if bytes[end + 4..sha_at].iter().any(|b| *b != 0) {
        return Err(BackupError::BadTrailer("padding is not zeros".into()));
    }
    let computed: [u8; 32] = Sha256::digest(&bytes[..sha_at]).into();
    if bytes[sha_at..] != computed {
        return Err(BackupError::Sha256Mismatch);
    }
    Ok(Backup {
        header,
        payload: payload.to_vec(),
        payload_crc32c: stored,
        sha256: computed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BackupHeader {
        BackupHeader {
            engine: "omnipaxos".into(),
            cluster_id: 0xfeed,
            member_id: 2,
            applied_index: 41,
            revision: 17,
            compact_revision: 3,
            keys: 9,
        }
    }

    fn file() -> Vec<u8> {
        encode_backup(&header(), b"the state image")
    }

    #[test]
    fn round_trip_keeps_header_and_payload() {
        let b = decode_backup(&file()).unwrap();
        assert_eq!(b.header, header());
        assert_eq!(b.payload, b"the state image");
        assert_eq!(b.payload_crc32c, crc32c::crc32c(b"the state image"));
        // etcdctl 3.4's `snapshot save` check: a SHA-256 after a multiple of 512 bytes.
        assert_eq!(file().len() % BACKUP_ALIGN_BYTES, BACKUP_SHA256_BYTES);
        let empty = encode_backup(&header(), &[]);
        assert_eq!(decode_backup(&empty).unwrap().payload, Vec::<u8>::new());
    }

    #[test]
    fn every_truncation_is_refused_as_truncated_or_foreign() {
        let f = file();
        for len in 0..f.len() {
            let e = decode_backup(&f[..len]).unwrap_err();
            assert!(
                matches!(e, BackupError::Truncated { .. }),
                "{len} bytes: {e}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let f = file();
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x40;
            assert!(
                decode_backup(&g).is_err(),
                "a flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn magic_version_header_payload_and_trailing_damage_are_named() {
        let f = file();
        let mut g = f.clone();
        g[0] = b'X';
        assert!(matches!(
            decode_backup(&g),
            Err(BackupError::BadMagic { .. })
        ));
        let mut g = f.clone();
        g[8] = 2;
        assert_eq!(
            decode_backup(&g),
            Err(BackupError::UnsupportedVersion { found: 2 })
        );
        let mut g = f.clone();
        g[20] ^= 1;
        assert!(matches!(
            decode_backup(&g),
            Err(BackupError::HeaderChecksum { .. })
        ));
        let mut g = f.clone();
        let payload_at = header_len("omnipaxos".len());
        g[payload_at] ^= 1;
        assert!(matches!(
            decode_backup(&g),
            Err(BackupError::PayloadChecksum { .. })
        ));
        let mut g = f.clone();
        g.push(0);
        assert!(matches!(decode_backup(&g), Err(BackupError::BadTrailer(_))));
        let mut g = f.clone();
        let last = g.len() - 1;
        g[last] ^= 1;
        assert_eq!(decode_backup(&g), Err(BackupError::Sha256Mismatch));
        let mut g = f.clone();
        g[last - BACKUP_SHA256_BYTES] = 7;
        assert!(matches!(decode_backup(&g), Err(BackupError::BadTrailer(_))));
        // An etcd (bbolt) snapshot is named for what it is not.
        let msg = decode_backup(&[0u8; 64]).unwrap_err().to_string();
        assert!(msg.contains("not a Synod backup"), "{msg}");
    }
}
