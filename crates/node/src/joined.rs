//! What a member added to a running cluster (`synod server --join`) keeps in its data
//! directory so that it restarts without `--join`: its member id and the cluster file it
//! derived when it joined (cluster name, engine and settings, the members it first contacted).
//!
//! The member list in it only says whom to contact: once the engine holds a configuration
//! (from the snapshot its peers sent) the runtime takes its peers from that, as on any
//! restart. Written atomically before the node starts for the first time, so a crash during
//! the join leaves either no record (the directory is still empty: join again) or a whole one.

use crate::config::{ClusterConfig, ConfigError, NodeConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use synod_core::NodeId;

/// The record's file name in the data directory.
pub const JOINED_FILE: &str = "joined.toml";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRecord {
    /// The id the cluster gave this member when an operator added it.
    pub member_id: NodeId,
    pub cluster: ClusterConfig,
    /// The member added itself back after its data directory was wiped (`synod server`'s
    /// automatic rejoin) as a learner, and promotes itself once it has caught up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_promote: bool,
}

impl JoinRecord {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(JOINED_FILE)
    }

    /// The record in `data_dir`, if this member joined a running cluster.
    pub fn load(data_dir: &Path) -> Result<Option<JoinRecord>, ConfigError> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let record: JoinRecord = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        record.cluster.validate()?;
        Ok(Some(record))
    }

    /// Writes the record into `data_dir` (created if missing), atomically and durably.
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let text = toml::to_string_pretty(self).map_err(std::io::Error::other)?;
        crate::storage::write_atomically(data_dir, JOINED_FILE, text.as_bytes())
    }

    /// The node configuration of this joined member.
    pub fn node_config(&self, data_dir: &Path) -> NodeConfig {
        let mut cfg = NodeConfig::new(self.cluster.clone(), self.member_id, data_dir);
        cfg.join = true;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_its_file_and_makes_a_joining_node() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(JoinRecord::load(dir.path()).unwrap(), None);
        let r = JoinRecord {
            member_id: 3,
            cluster: ClusterConfig::local(3, 7000),
            auto_promote: true,
        };
        r.save(dir.path()).unwrap();
        assert_eq!(JoinRecord::load(dir.path()).unwrap(), Some(r.clone()));
        let cfg = r.node_config(dir.path());
        assert!(cfg.join);
        assert_eq!(cfg.node_id, 3);
        cfg.validate().unwrap();
    }
}
