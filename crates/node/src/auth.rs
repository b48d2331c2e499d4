//! Authentication at the API edge: who is calling, and may they do this. Shared by every API
//! (etcd gRPC, its /v3 JSON gateway, the HTTP API) through [`NodeHandle`](crate::NodeHandle).
//!
//! * **Identity.** An API resolves each request's credentials to a [`Caller`] with
//!   [`AuthGate::resolve`] — a simple token (gRPC metadata `token`, HTTP `Authorization`), or
//!   the common name of a verified client certificate (the TLS listener passes it in) — and
//!   runs the request inside [`scope`]. Everything the request does through
//!   [`NodeHandle::execute`](crate::NodeHandle::execute) is then checked against that caller,
//!   including what Lock, Election and the HTTP API do on its behalf. A request run outside a
//!   scope is anonymous: forgetting the scope refuses, never opens.
//! * **Tokens** are etcd's "simple" tokens: random, known only to the member that issued them,
//!   valid for [`TOKEN_TTL`] after their last use. A client that takes its token to another
//!   member gets "invalid auth token" and authenticates again (clientv3 and etcdctl do so by
//!   themselves). They are forgotten when auth is disabled.
//! * **Passwords** are hashed here, with a random salt, before the change is proposed
//!   ([`hash_password`]): the log and snapshots never see plaintext.
//! * **Staleness.** Checks use this member's *applied* auth state. A revocation therefore
//!   binds a member once that member has applied it — normally within a round trip of the
//!   commit; a member that lags (partitioned, slow) keeps allowing what was revoked until it
//!   catches up, for requests it serves locally. See docs/security.md.
//! * **Cost when off**: one relaxed atomic load per request ([`AuthGate::enabled`]).

use crate::handle::ApiError;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use synod_core::EngineError;
use synod_core::auth::{AuthError, AuthState, Need, PasswordHash};
use synod_core::kv::{Op, Span};

/// How long a simple token stays valid after its last use (etcd's `--auth-token-ttl`, 300 s).
pub const TOKEN_TTL: Duration = Duration::from_secs(300);
/// Tokens one member holds at once; beyond it the least recently used is forgotten (its
/// holder authenticates again).
pub const TOKENS_MAX: usize = 65_536;
/// PBKDF2-HMAC-SHA256 rounds for new password hashes (each hash records its own count, so
/// this can be raised without invalidating stored ones).
pub const PASSWORD_HASH_ITERATIONS: u32 = 100_000;
/// Bytes of random salt per password, and of randomness per token.
const SALT_BYTES: usize = 16;
const TOKEN_RANDOM_BYTES: usize = 16;
/// Longest password accepted (hashing cost grows with it; etcd has no bound).
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// Who a request comes from, as its credentials say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// A token this member does not know (expired, issued elsewhere, or forged).
    InvalidToken,
    /// An authenticated user.
    User(String),
    /// The member itself (auto-compaction, a joining member publishing its addresses): never
    /// resolved from a request's credentials, only set by [`as_member`].
    Member,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Runs `f` on behalf of `caller`: the checks inside it see that caller.
pub async fn scope<F: Future>(caller: Caller, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

/// Runs `f` as the member itself, allowed everything: for work the node does on its own
/// behalf, which no client's credentials cover.
pub async fn as_member<F: Future>(f: F) -> F::Output {
    CALLER.scope(Caller::Member, f).await
}

/// The caller of the request being served here (anonymous outside any [`scope`]).
pub fn current() -> Caller {
    CALLER.try_with(Caller::clone).unwrap_or(Caller::Anonymous)
}

struct TokenEntry {
    user: String,
    last_used: Instant,
}

/// This member's view of auth: the applied state and the tokens it issued.
pub struct AuthGate {
    /// Mirrors `state.enabled`: the one thing a request reads when auth is off.
    enabled: AtomicBool,
    state: RwLock<Arc<AuthState>>,
    tokens: Mutex<HashMap<String, TokenEntry>>,
    /// Test only: the planted bug `TxnElseBranchUnchecked`.
    skip_failure_branch: bool,
}

impl Default for AuthGate {
    fn default() -> Self {
        AuthGate::new(false)
    }
}

impl AuthGate {
    pub fn new(skip_failure_branch: bool) -> Self {
        AuthGate {
            enabled: AtomicBool::new(false),
            state: RwLock::new(Arc::default()),
            tokens: Mutex::new(HashMap::new()),
            skip_failure_branch,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The auth state this member applied last.
    pub fn state(&self) -> Arc<AuthState> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes the state the engine applied (called after every batch: cheap when unchanged).
    pub fn observe(&self, applied: &Arc<AuthState>) {
        if Arc::ptr_eq(&self.state(), applied) {
            return;
        }
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = applied.clone();
        let was = self.enabled.swap(applied.enabled, Ordering::Relaxed);
        if was && !applied.enabled {
            self.tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
    }

    /// The caller a request's credentials name. `token` is the simple token it carries;
    /// `cert_common_name` the CN of its verified client certificate, if the listener does
    /// client-certificate auth — etcd's rule: a token, when given, wins over the certificate.
    pub fn resolve(&self, token: Option<&str>, cert_common_name: Option<&str>) -> Caller {
        if !self.enabled() {
            return Caller::Anonymous;
        }
        match (token, cert_common_name) {
            (Some(t), _) if !t.is_empty() => self.user_of(t),
            (_, Some(cn)) if !cn.is_empty() => Caller::User(cn.to_string()),
            _ => Caller::Anonymous,
        }
    }

    fn user_of(&self, token: &str) -> Caller {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match tokens.get_mut(token) {
            Some(e) if now.duration_since(e.last_used) < TOKEN_TTL => {
                e.last_used = now;
                Caller::User(e.user.clone())
            }
            Some(_) => {
                tokens.remove(token);
                Caller::InvalidToken
            }
            None => Caller::InvalidToken,
        }
    }

    /// etcd's Authenticate: checks `password` against `name`'s hash in the applied state and
    /// issues a token. Slow by design (the hash); run it off the async threads.
    pub fn authenticate(&self, name: &str, password: &str) -> Result<String, AuthError> {
        let state = self.state();
        if !state.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        if name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let hash = state
            .users
            .get(name)
            .and_then(|u| u.password.as_ref())
            .ok_or(AuthError::AuthFailed)?;
        if !verify_password(password, hash) {
            return Err(AuthError::AuthFailed);
        }
        self.issue(name)
    }

    fn issue(&self, user: &str) -> Result<String, AuthError> {
        let mut random = [0u8; TOKEN_RANDOM_BYTES];
        // No randomness, no token: refusing is safer than a guessable one.
        getrandom::fill(&mut random).map_err(|_| AuthError::AuthFailed)?;
        let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        tokens.retain(|_, e| now.duration_since(e.last_used) < TOKEN_TTL);
        if tokens.len() >= TOKENS_MAX {
            let oldest = tokens
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(t, _)| t.clone());
            if let Some(t) = oldest {
                tokens.remove(&t);
            }
        }
        tokens.insert(
            token.clone(),
            TokenEntry {
                user: user.to_string(),
                last_used: now,
            },
        );
        Ok(token)
    }

    /// Whether the current caller may run `op`. Lease ops whose effect depends on the lease's
    /// keys get their key check from the caller ([`AuthGate::check_needs`]).
    pub fn check_op(&self, op: &Op) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        self.check_needs(&synod_core::auth::needs(op, self.skip_failure_branch))
    }

    /// Whether the current caller has everything in `needs` (nothing is needed when auth is
    /// off).
    pub fn check_needs(&self, needs: &[Need]) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let refuse = |e: AuthError| Err(ApiError::Engine(EngineError::Auth(e)));
        match current() {
            Caller::Anonymous => refuse(AuthError::UserEmpty),
            Caller::InvalidToken => refuse(AuthError::InvalidAuthToken),
            Caller::Member => Ok(()),
            Caller::User(u) => self
                .state()
                .check(&u, needs)
                .map_err(|e| ApiError::Engine(EngineError::Auth(e))),
        }
    }

    /// Root only: maintenance, membership, auth administration.
    pub fn require_root(&self) -> Result<(), ApiError> {
        self.check_needs(&[Need::Root])
    }

    /// Read on `[key, range_end)` (a watch, a lease's keys).
    pub fn require_read(&self, key: &[u8], range_end: &[u8]) -> Result<(), ApiError> {
        self.check_needs(&[Need::Read(Span::range(key, range_end))])
    }
}

/// A new hash of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<PasswordHash, ApiError> {
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(ApiError::TooLarge {
            what: "password",
            bytes: password.len(),
            max: PASSWORD_BYTES_MAX,
        });
    }
    let mut salt = vec![0u8; SALT_BYTES];
    getrandom::fill(&mut salt)
        .map_err(|e| ApiError::Unavailable(format!("no randomness for a password salt: {e}")))?;
    let mut hash = vec![0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
        password.as_bytes(),
        &salt,
        PASSWORD_HASH_ITERATIONS,
        &mut hash,
    );
    Ok(PasswordHash {
        iterations: PASSWORD_HASH_ITERATIONS,
        salt,
        hash,
    })
}

/// Whether `password` matches `stored`, compared in constant time.
pub fn verify_password(password: &str, stored: &PasswordHash) -> bool {
    if password.len() > PASSWORD_BYTES_MAX || stored.hash.is_empty() {
        return false;
    }
    let mut got = vec![0u8; stored.hash.len()];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
        password.as_bytes(),
        &stored.salt,
        stored.iterations,
        &mut got,
    );
    got.iter()
        .zip(&stored.hash)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::auth::AuthChange;

    fn enabled_gate() -> AuthGate {
        let gate = AuthGate::default();
        let mut s = AuthState::default();
        let pw = hash_password("pw").expect("hash");
        for c in [
            AuthChange::UserAdd {
                name: "root".into(),
                password: Some(pw.clone()),
            },
            AuthChange::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            AuthChange::Enable,
        ] {
            s.apply(&c).expect("apply");
        }
        gate.observe(&Arc::new(s));
        gate
    }

    #[test]
    fn passwords_verify_and_salts_differ() {
        let a = hash_password("secret").expect("hash");
        let b = hash_password("secret").expect("hash");
        assert_ne!(a.salt, b.salt);
        assert!(verify_password("secret", &a));
        assert!(!verify_password("Secret", &a));
    }

    #[tokio::test]
    async fn tokens_name_users_and_unknown_ones_are_invalid() {
        let gate = enabled_gate();
        assert_eq!(
            gate.authenticate("root", "nope"),
            Err(AuthError::AuthFailed)
        );
        let token = gate.authenticate("root", "pw").expect("token");
        assert_eq!(
            gate.resolve(Some(&token), None),
            Caller::User("root".into())
        );
        assert_eq!(gate.resolve(Some("forged"), None), Caller::InvalidToken);
        assert_eq!(gate.resolve(None, Some("cn")), Caller::User("cn".into()));
        let denied = scope(Caller::Anonymous, async { gate.require_root() }).await;
        assert!(denied.is_err());
        assert_eq!(as_member(async { gate.require_root() }).await, Ok(()));
        let root = scope(gate.resolve(Some(&token), None), async {
            gate.require_root()
        })
        .await;
        assert_eq!(root, Ok(()));
        // Disabling forgets every token.
        gate.observe(&Arc::new(AuthState::default()));
        assert_eq!(gate.resolve(Some(&token), None), Caller::Anonymous);
        assert_eq!(gate.check_op(&Op::LeaseLeases), Ok(()));
    }
}
