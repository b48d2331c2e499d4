//! etcd's authentication and role-based access control, as a deterministic state machine and
//! a pure permission check — everything about auth that must agree on every member, with no
//! clock, no randomness and no I/O (password hashing and tokens live at the API node).
//!
//! **Model** (etcd v3's): users hold roles, roles hold permissions; a permission is read, write
//! or readwrite on one key, a half-open range `[key, range_end)`, or every key from `key` on
//! (`range_end == "\0"`, etcdctl's `--from-key`; a prefix is the range up to its
//! [`crate::kv::prefix_end`]). A user may do what the union of its roles' permissions covers.
//! The `root` role can do everything, and enabling auth requires a `root` user that has it.
//!
//! **Replicated.** Every change is an [`AuthChange`] decided in the log like a write
//! ([`crate::kv::Op::Auth`]) and applied by the replica layer, so every member reaches the same
//! [`AuthState`], which checkpoints and backups carry. Passwords arrive here already hashed
//! with a random salt ([`PasswordHash`]): neither the log nor a snapshot holds plaintext.
//!
//! **Checks.** [`needs`] lists what an operation requires; [`AuthState::check`] answers whether
//! a user has all of it. A request range is allowed when the user's permitted ranges of the
//! right kind, merged, cover it whole (etcd's interval-tree rule: two grants that meet or
//! overlap cover their union).

use crate::kv::footprint::Span;
use crate::kv::{Op, TxnOp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The user that must exist, with the role of the same name, before auth can be enabled.
pub const ROOT: &str = "root";
/// Longest user or role name accepted (etcd has no bound; names are copied into every token
/// and log entry, so one is kept).
pub const AUTH_NAME_BYTES_MAX: usize = 256;
/// Most users, roles, and permissions per role the state holds: the auth state is copied to
/// every API node on each change and scanned on each check.
pub const AUTH_USERS_MAX: usize = 10_000;
pub const AUTH_ROLES_MAX: usize = 10_000;
pub const AUTH_PERMISSIONS_PER_ROLE_MAX: usize = 1_000;

/// etcd's `authpb.Permission.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PermKind {
    Read,
    Write,
    ReadWrite,
}

impl PermKind {
    fn allows_read(self) -> bool {
        matches!(self, PermKind::Read | PermKind::ReadWrite)
    }
    fn allows_write(self) -> bool {
        matches!(self, PermKind::Write | PermKind::ReadWrite)
    }
}

/// One grant: `kind` on the etcd span `[key, range_end)` (empty end = `key` alone, `"\0"` =
/// every key from `key` on).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Permission {
    pub kind: PermKind,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// A password as the state keeps it: PBKDF2-HMAC-SHA256 of the password with a random salt,
/// made at the API node that received it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PasswordHash {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Even a hash is not for logs.
        write!(f, "PasswordHash(pbkdf2-sha256, {} rounds)", self.iterations)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `None`: the user has no password and can only be authenticated otherwise (a client
    /// certificate's common name), etcd's `--no-password`.
    pub password: Option<PasswordHash>,
    pub roles: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// In grant order; one entry per distinct `(key, range_end)`.
    pub permissions: Vec<Permission>,
}

/// One change of the auth state: etcd's Auth RPCs that write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthChange {
    Enable,
    Disable,
    UserAdd {
        name: String,
        password: Option<PasswordHash>,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password: Option<PasswordHash>,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        permission: Permission,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

/// Why an auth change or check was refused. Each is one of etcd's `rpctypes` errors; the API
/// maps the variant (never the text) to a status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuthError {
    UserEmpty,
    UserAlreadyExists,
    UserNotFound,
    RoleEmpty,
    RoleAlreadyExists,
    RoleNotFound,
    RoleNotGranted,
    PermissionNotGranted,
    RootUserNotExist,
    RootRoleNotExist,
    /// Deleting root, or revoking root's root role, while auth is enabled.
    InvalidAuthManagement,
    AuthFailed,
    AuthNotEnabled,
    PermissionDenied,
    InvalidAuthToken,
    /// A name over [`AUTH_NAME_BYTES_MAX`] or a state over one of its bounds.
    TooLarge,
}

impl AuthError {
    /// etcd's message for the error, as etcdctl prints it.
    pub fn message(self) -> &'static str {
        match self {
            AuthError::UserEmpty => "etcdserver: user name is empty",
            AuthError::UserAlreadyExists => "etcdserver: user name already exists",
            AuthError::UserNotFound => "etcdserver: user name not found",
            AuthError::RoleEmpty => "etcdserver: role name is empty",
            AuthError::RoleAlreadyExists => "etcdserver: role name already exists",
            AuthError::RoleNotFound => "etcdserver: role name not found",
            AuthError::RoleNotGranted => "etcdserver: role is not granted to the user",
            AuthError::PermissionNotGranted => "etcdserver: permission is not granted to the role",
            AuthError::RootUserNotExist => "etcdserver: root user does not exist",
            AuthError::RootRoleNotExist => "etcdserver: root user does not have root role",
            AuthError::InvalidAuthManagement => "etcdserver: invalid auth management",
            AuthError::AuthFailed => {
                "etcdserver: authentication failed, invalid user ID or password"
            }
            AuthError::AuthNotEnabled => "etcdserver: authentication is not enabled",
            AuthError::PermissionDenied => "etcdserver: permission denied",
            AuthError::InvalidAuthToken => "etcdserver: invalid auth token",
            AuthError::TooLarge => "synod: auth name or auth state over its bound",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AuthError {}

/// Every member's copy of the auth configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// etcd's auth revision: +1 per change that took effect.
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

/// One thing an operation requires of its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    Read(Span),
    Write(Span),
    /// The `root` role (compaction, membership, maintenance, auth changes).
    Root,
    /// Any authenticated user (lease grants and keep-alives: etcd checks no key for them).
    User,
}

fn name_ok(name: &str, empty: AuthError) -> Result<(), AuthError> {
    if name.is_empty() {
        return Err(empty);
    }
    if name.len() > AUTH_NAME_BYTES_MAX {
        return Err(AuthError::TooLarge);
    }
    Ok(())
}

impl AuthState {
    /// Applies one decided change. A refused change changes nothing (the revision included).
    pub fn apply(&mut self, change: &AuthChange) -> Result<(), AuthError> {
        self.apply_inner(change)?;
        self.revision += 1;
        Ok(())
    }

    fn apply_inner(&mut self, change: &AuthChange) -> Result<(), AuthError> {
        match change {
            AuthChange::Enable => {
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                if !root.roles.contains(ROOT) {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
            }
            AuthChange::Disable => self.enabled = false,
            AuthChange::UserAdd { name, password } => {
                name_ok(name, AuthError::UserEmpty)?;
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExists);
                }
                if self.users.len() >= AUTH_USERS_MAX {
                    return Err(AuthError::TooLarge);
                }
                let user = User {
                    password: password.clone(),
                    roles: BTreeSet::new(),
                };
                self.users.insert(name.clone(), user);
            }
            AuthChange::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthManagement);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
            }
            AuthChange::UserChangePassword { name, password } => {
                let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                user.password = password.clone();
            }
            AuthChange::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(AuthError::UserNotFound);
                }
                // etcd lets `root` be granted before a role of that name is added.
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                if let Some(u) = self.users.get_mut(user) {
                    u.roles.insert(role.clone());
                }
            }
            AuthChange::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(AuthError::InvalidAuthManagement);
                }
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                if !u.roles.remove(role) {
                    return Err(AuthError::RoleNotGranted);
                }
            }
            AuthChange::RoleAdd { name } => {
                name_ok(name, AuthError::RoleEmpty)?;
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExists);
                }
                if self.roles.len() >= AUTH_ROLES_MAX {
                    return Err(AuthError::TooLarge);
                }
                self.roles.insert(name.clone(), Role::default());
            }
            AuthChange::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthManagement);
                }
                self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
                for u in self.users.values_mut() {
                    u.roles.remove(name);
                }
            }
            AuthChange::RoleGrantPermission { role, permission } => {
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let full = r.permissions.len() >= AUTH_PERMISSIONS_PER_ROLE_MAX;
                let same = |p: &&mut Permission| {
                    p.key == permission.key && p.range_end == permission.range_end
                };
                match r.permissions.iter_mut().find(same) {
                    Some(p) => p.kind = permission.kind,
                    None if full => return Err(AuthError::TooLarge),
                    None => r.permissions.push(permission.clone()),
                }
            }
            AuthChange::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let before = r.permissions.len();
                r.permissions
                    .retain(|p| !(&p.key == key && &p.range_end == range_end));
                if r.permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
            }
        }
        Ok(())
    }

    /// Whether `user` exists and holds the `root` role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// Whether `user` may do everything in `needs`. An unknown user is refused like one
    /// without permission (its token outlived it).
    pub fn check(&self, user: &str, needs: &[Need]) -> Result<(), AuthError> {
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let Some(u) = self.users.get(user) else {
            return Err(AuthError::PermissionDenied);
        };
        if u.roles.contains(ROOT) {
            return Ok(());
        }
        for need in needs {
            let ok = match need {
                Need::Root => false,
                Need::User => true,
                Need::Read(s) => self.covers(u, s, PermKind::allows_read),
                Need::Write(s) => self.covers(u, s, PermKind::allows_write),
            };
            if !ok {
                return Err(AuthError::PermissionDenied);
            }
        }
        Ok(())
    }

    /// Whether the permitted ranges of `user`'s roles that `kind_ok` accepts cover `span`.
    fn covers(&self, user: &User, span: &Span, kind_ok: fn(PermKind) -> bool) -> bool {
        let mut granted: Vec<Interval> = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.permissions.iter())
            .filter(|p| kind_ok(p.kind))
            .map(|p| Interval::of(&p.key, &p.range_end))
            .collect();
        granted.sort_by(|a, b| a.start.cmp(&b.start));
        let want = Interval::of(&span.key, &span.range_end);
        if want.is_empty() {
            // An empty range reads and writes nothing (etcd answers it empty).
            return true;
        }
        // Merge the grants in start order; the request is covered when one merged run holds it.
        let mut run: Option<Interval> = None;
        for g in granted {
            run = match run {
                Some(mut r) if !r.ends_before(&g.start) => {
                    r.extend_to(g.end);
                    Some(r)
                }
                Some(r) if r.contains(&want) => return true,
                _ => Some(g),
            };
        }
        run.is_some_and(|r| r.contains(&want))
    }
}

/// A half-open key interval; `end: None` = unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    /// The etcd span `[key, range_end)` as an interval: a single key `k` is `[k, k\0)`, the
    /// smallest interval holding only `k`.
    fn of(key: &[u8], range_end: &[u8]) -> Interval {
        let end = if range_end.is_empty() {
            let mut e = key.to_vec();
            e.push(0);
            Some(e)
        } else if range_end == [0] {
            None
        } else {
            Some(range_end.to_vec())
        };
        Interval {
            start: key.to_vec(),
            end,
        }
    }

    fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|e| *e <= self.start)
    }

    /// Whether this interval ends strictly before `key` (no key between them is covered).
    fn ends_before(&self, key: &[u8]) -> bool {
        self.end.as_ref().is_some_and(|e| e.as_slice() < key)
    }

    fn extend_to(&mut self, end: Option<Vec<u8>>) {
        self.end = match (self.end.take(), end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }

    fn contains(&self, other: &Interval) -> bool {
        let ends_ok = match (&self.end, &other.end) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => b <= a,
        };
        self.start <= other.start && ends_ok
    }
}

/// What `op` requires of its caller (etcd 3.4's rules): read on every range read (a Txn's
/// compares included, and a put's or delete's `prev_kv`), write on every key written, in
/// *both* branches of a Txn whatever the compares will say; root for compaction, membership
/// and auth changes; any user for lease grants and keep-alives. The keys a lease revocation
/// deletes or a TimeToLive lists are not in the op: the API checks them against the lease.
///
/// `skip_failure_branch` is the planted bug `TxnElseBranchUnchecked` (test only): the Txn's
/// failure branch goes unchecked.
pub fn needs(op: &Op, skip_failure_branch: bool) -> Vec<Need> {
    let mut n = Vec::new();
    match op {
        Op::Range(r) => n.push(Need::Read(Span::range(&r.key, &r.range_end))),
        Op::Put(p) => put_needs(p, &mut n),
        Op::DeleteRange(d) => delete_needs(d, &mut n),
        Op::Txn(t) => {
            for c in &t.compare {
                n.push(Need::Read(Span::range(&c.key, &c.range_end)));
            }
            let failure: &[TxnOp] = if skip_failure_branch { &[] } else { &t.failure };
            for o in t.success.iter().chain(failure) {
                match o {
                    TxnOp::Range(r) => n.push(Need::Read(Span::range(&r.key, &r.range_end))),
                    TxnOp::Put(p) => put_needs(p, &mut n),
                    TxnOp::DeleteRange(d) => delete_needs(d, &mut n),
                }
            }
        }
        Op::Cas(c) => {
            n.push(Need::Read(Span::key(&c.key)));
            n.push(Need::Write(Span::key(&c.key)));
        }
        Op::LeaseGrant(_)
        | Op::LeaseKeepAlive { .. }
        | Op::LeaseLeases
        | Op::LeaseRevoke { .. }
        | Op::LeaseTimeToLive { .. } => n.push(Need::User),
        Op::Compact(_)
        | Op::LeaseExpire { .. }
        | Op::Membership(_)
        | Op::MembershipAt { .. }
        | Op::Auth(_)
        | Op::Split(_)
        | Op::Merge(_)
        | Op::Absorb(_)
        | Op::Move(_)
        | Op::CloseRevisions { .. } => n.push(Need::Root),
    }
    n
}

fn put_needs(p: &crate::kv::PutRequest, n: &mut Vec<Need>) {
    n.push(Need::Write(Span::key(&p.key)));
    if p.prev_kv {
        n.push(Need::Read(Span::key(&p.key)));
    }
}

fn delete_needs(d: &crate::kv::DeleteRangeRequest, n: &mut Vec<Need>) {
    let span = Span::range(&d.key, &d.range_end);
    if d.prev_kv {
        n.push(Need::Read(span.clone()));
    }
    n.push(Need::Write(span));
}

#[cfg(test)]
mod tests;
