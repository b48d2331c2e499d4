//! `synodctl snapshot save FILE` (a backup of the answering member over `GET /v1/snapshot`,
//! verified before it is kept) and `synodctl snapshot status FILE` (what a backup file holds,
//! after checking it whole). The format is `synod_core::backup`'s, documented in
//! docs/backup.md; `synod restore` turns a file into a new cluster.

use crate::args::Format;
use crate::client::{Client, CtlError, Request};
use reqwest::Method;
use serde_json::json;
use std::io::{Read, Write};
use std::path::Path;
use synod_core::backup::{Backup, decode_backup};

/// Largest backup accepted from a server (the largest state a snapshot transfer carries,
/// plus framing): a server cannot make synodctl buffer without bound.
const BACKUP_BYTES_MAX: u64 = (1 << 30) + 1024 * 1024;

fn local(file: &Path, reason: impl std::fmt::Display) -> CtlError {
    CtlError::BadAnswer {
        endpoint: file.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Downloads, verifies and writes the backup (to FILE.part, synced, then renamed).
pub fn save(client: &mut Client, file: &Path, out: &mut dyn Write) -> Result<(), CtlError> {
    let stream = client.open_stream(&Request::new(Method::GET, "/v1/snapshot".into()))?;
    let endpoint = stream.endpoint.clone();
    let mut bytes = Vec::new();
    stream
        .reader
        .take(BACKUP_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CtlError::BadAnswer {
            endpoint: endpoint.clone(),
            reason: format!("backup download broke: {e}"),
        })?;
    let backup = decode_backup(&bytes).map_err(|e| CtlError::BadAnswer {
        endpoint: endpoint.clone(),
        reason: format!("the backup received is unusable: {e}"),
    })?;
    let part = file.with_extension("part");
    let written = std::fs::File::create(&part).and_then(|mut f| {
        f.write_all(&bytes)?;
        f.sync_all()
    });
    written
        .and_then(|()| std::fs::rename(&part, file))
        .map_err(|e| local(file, format!("cannot write the backup: {e}")))?;
    let h = &backup.header;
    let _ = writeln!(
        out,
        "Snapshot saved at {} (member {}, revision {}, {} keys, {} bytes)",
        file.display(),
        h.member_id,
        h.revision,
        h.keys,
        bytes.len()
    );
    Ok(())
}

/// Checks FILE and prints what it holds.
pub fn status(file: &Path, format: Format, out: &mut dyn Write) -> Result<(), CtlError> {
    let bytes = std::fs::read(file).map_err(|e| local(file, e))?;
    let b = decode_backup(&bytes).map_err(|e| local(file, e))?;
    let _ = writeln!(out, "{}", render(&b, bytes.len(), format));
    Ok(())
}

fn render(b: &Backup, size: usize, format: Format) -> String {
    let h = &b.header;
    let sha: String = b.sha256.iter().map(|x| format!("{x:02x}")).collect();
    let crc = format!("{:08x}", b.payload_crc32c);
    match format {
        Format::Json => json!({
            "engine": h.engine,
            "cluster_id": format!("{:x}", h.cluster_id),
            "member_id": h.member_id,
            "revision": h.revision,
            "compact_revision": h.compact_revision,
            "applied_index": h.applied_index,
            "keys": h.keys,
            "size_bytes": size,
            "payload_crc32c": crc,
            "sha256": sha,
        })
        .to_string(),
        // etcdctl's `snapshot status` columns: hash, revision, total keys, total size.
        Format::Table => format!(
            "+----------+----------+------------+------------+\n\
             |   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +----------+----------+------------+------------+\n\
             | {crc:>8} | {:>8} | {:>10} | {:>10} |\n\
             +----------+----------+------------+------------+",
            h.revision, h.keys, size
        ),
        Format::Simple => format!("{crc}, {}, {}, {size}", h.revision, h.keys),
    }
}
