//! The permission logic and the auth state machine: ranges, prefixes, from-key grants,
//! overlapping and adjacent grants, and etcd's rules for root.

use super::*;
use crate::kv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest,
    TxnRequest, prefix_end,
};

fn perm(kind: PermKind, key: &str, end: &[u8]) -> Permission {
    Permission {
        kind,
        key: key.as_bytes().to_vec(),
        range_end: end.to_vec(),
    }
}

/// A state with user `u` holding one role `r` with `perms`, plus root.
fn state(perms: Vec<Permission>) -> AuthState {
    let mut s = AuthState::default();
    let ok = |s: &mut AuthState, c: AuthChange| s.apply(&c).expect("change applies");
    ok(
        &mut s,
        AuthChange::UserAdd {
            name: "root".into(),
            password: None,
        },
    );
    ok(
        &mut s,
        AuthChange::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
    );
    ok(
        &mut s,
        AuthChange::UserAdd {
            name: "u".into(),
            password: None,
        },
    );
    ok(&mut s, AuthChange::RoleAdd { name: "r".into() });
    for p in perms {
        ok(
            &mut s,
            AuthChange::RoleGrantPermission {
                role: "r".into(),
                permission: p,
            },
        );
    }
    ok(
        &mut s,
        AuthChange::UserGrantRole {
            user: "u".into(),
            role: "r".into(),
        },
    );
    ok(&mut s, AuthChange::Enable);
    s
}

fn read(key: &str, end: &[u8]) -> Vec<Need> {
    vec![Need::Read(Span::range(key.as_bytes(), end))]
}
fn write(key: &str, end: &[u8]) -> Vec<Need> {
    vec![Need::Write(Span::range(key.as_bytes(), end))]
}

#[test]
fn single_key_grant_covers_that_key_only() {
    let s = state(vec![perm(PermKind::Read, "a", b"")]);
    assert_eq!(s.check("u", &read("a", b"")), Ok(()));
    assert_eq!(
        s.check("u", &read("b", b"")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check("u", &read("a", b"b")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check("u", &write("a", b"")),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn prefix_grant_covers_the_prefix_and_nothing_beyond() {
    let s = state(vec![perm(
        PermKind::ReadWrite,
        "/app/",
        &prefix_end(b"/app/"),
    )]);
    assert_eq!(s.check("u", &read("/app/x", b"")), Ok(()));
    assert_eq!(s.check("u", &write("/app/x", b"")), Ok(()));
    assert_eq!(s.check("u", &read("/app/", &prefix_end(b"/app/"))), Ok(()));
    assert_eq!(s.check("u", &read("/app/a", b"/app/z")), Ok(()));
    assert_eq!(
        s.check("u", &read("/app", b"")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check("u", &read("/", &prefix_end(b"/"))),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check("u", &read("/app/", &[0])),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn from_key_grant_covers_everything_after() {
    let s = state(vec![perm(PermKind::Read, "m", &[0])]);
    assert_eq!(s.check("u", &read("m", &[0])), Ok(()));
    assert_eq!(s.check("u", &read("zzz", b"")), Ok(()));
    assert_eq!(s.check("u", &read("x", &[0])), Ok(()));
    assert_eq!(
        s.check("u", &read("l", &[0])),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check("u", &read("a", b"n")),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn adjacent_and_overlapping_grants_merge() {
    let s = state(vec![
        perm(PermKind::Read, "c", b"f"),
        perm(PermKind::Read, "a", b"c"),
        perm(PermKind::ReadWrite, "e", b"h"),
        perm(PermKind::Read, "k", b"m"),
    ]);
    assert_eq!(
        s.check("u", &read("a", b"h")),
        Ok(()),
        "[a,c)+[c,f)+[e,h) is one run"
    );
    assert_eq!(s.check("u", &read("b", b"g")), Ok(()));
    assert_eq!(
        s.check("u", &read("a", b"i")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check("u", &read("g", b"l")),
        Err(AuthError::PermissionDenied),
        "gap [h,k)"
    );
    assert_eq!(s.check("u", &read("k", b"m")), Ok(()));
    // Write only where a write grant is: [e,h).
    assert_eq!(s.check("u", &write("e", b"h")), Ok(()));
    assert_eq!(
        s.check("u", &write("d", b"h")),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn grants_of_several_roles_add_up() {
    let mut s = state(vec![perm(PermKind::Read, "a", b"c")]);
    s.apply(&AuthChange::RoleAdd { name: "r2".into() })
        .expect("add");
    s.apply(&AuthChange::RoleGrantPermission {
        role: "r2".into(),
        permission: perm(PermKind::Read, "c", b"e"),
    })
    .expect("grant");
    assert_eq!(
        s.check("u", &read("a", b"e")),
        Err(AuthError::PermissionDenied)
    );
    s.apply(&AuthChange::UserGrantRole {
        user: "u".into(),
        role: "r2".into(),
    })
    .expect("grant role");
    assert_eq!(s.check("u", &read("a", b"e")), Ok(()));
    s.apply(&AuthChange::RoleDelete { name: "r2".into() })
        .expect("delete role");
    assert_eq!(
        s.check("u", &read("a", b"e")),
        Err(AuthError::PermissionDenied)
    );
    assert!(
        !s.users["u"].roles.contains("r2"),
        "deleting a role revokes it from users"
    );
}

#[test]
fn root_does_everything_and_others_never_root() {
    let s = state(vec![perm(PermKind::ReadWrite, "", &[0])]);
    assert_eq!(
        s.check("root", &[Need::Root, Need::Write(Span::range(b"", &[0]))]),
        Ok(())
    );
    assert_eq!(s.check("u", &read("", &[0])), Ok(()));
    assert_eq!(
        s.check("u", &[Need::Root]),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(s.check("", &[Need::User]), Err(AuthError::UserEmpty));
    assert_eq!(
        s.check("ghost", &[Need::User]),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn enable_needs_root_with_root_role() {
    let mut s = AuthState::default();
    assert_eq!(
        s.apply(&AuthChange::Enable),
        Err(AuthError::RootUserNotExist)
    );
    s.apply(&AuthChange::UserAdd {
        name: "root".into(),
        password: None,
    })
    .expect("add");
    assert_eq!(
        s.apply(&AuthChange::Enable),
        Err(AuthError::RootRoleNotExist)
    );
    assert_eq!(s.revision, 1, "refused changes do not count");
    s.apply(&AuthChange::UserGrantRole {
        user: "root".into(),
        role: "root".into(),
    })
    .expect("grant");
    s.apply(&AuthChange::Enable).expect("enable");
    assert!(s.enabled);
    assert_eq!(
        s.apply(&AuthChange::UserDelete {
            name: "root".into()
        }),
        Err(AuthError::InvalidAuthManagement)
    );
    assert_eq!(
        s.apply(&AuthChange::UserRevokeRole {
            user: "root".into(),
            role: "root".into()
        }),
        Err(AuthError::InvalidAuthManagement)
    );
    assert_eq!(
        s.apply(&AuthChange::RoleDelete {
            name: "root".into()
        }),
        Err(AuthError::InvalidAuthManagement)
    );
    s.apply(&AuthChange::Disable).expect("disable");
    assert!(!s.enabled);
}

#[test]
fn etcd_errors_for_users_and_roles() {
    let mut s = AuthState::default();
    let add = |n: &str| AuthChange::UserAdd {
        name: n.into(),
        password: None,
    };
    assert_eq!(s.apply(&add("")), Err(AuthError::UserEmpty));
    s.apply(&add("a")).expect("add");
    assert_eq!(s.apply(&add("a")), Err(AuthError::UserAlreadyExists));
    assert_eq!(
        s.apply(&AuthChange::UserDelete { name: "b".into() }),
        Err(AuthError::UserNotFound)
    );
    assert_eq!(
        s.apply(&AuthChange::RoleAdd { name: "".into() }),
        Err(AuthError::RoleEmpty)
    );
    s.apply(&AuthChange::RoleAdd { name: "r".into() })
        .expect("role");
    assert_eq!(
        s.apply(&AuthChange::RoleAdd { name: "r".into() }),
        Err(AuthError::RoleAlreadyExists)
    );
    assert_eq!(
        s.apply(&AuthChange::UserGrantRole {
            user: "a".into(),
            role: "x".into()
        }),
        Err(AuthError::RoleNotFound)
    );
    assert_eq!(
        s.apply(&AuthChange::UserRevokeRole {
            user: "a".into(),
            role: "r".into()
        }),
        Err(AuthError::RoleNotGranted)
    );
    assert_eq!(
        s.apply(&AuthChange::RoleRevokePermission {
            role: "r".into(),
            key: b"k".to_vec(),
            range_end: vec![]
        }),
        Err(AuthError::PermissionNotGranted)
    );
    assert_eq!(
        AuthError::AuthFailed.message(),
        "etcdserver: authentication failed, invalid user ID or password"
    );
}

#[test]
fn regrant_replaces_the_kind_and_revoke_removes_it() {
    let mut s = state(vec![perm(PermKind::Read, "k", b"")]);
    assert_eq!(
        s.check("u", &write("k", b"")),
        Err(AuthError::PermissionDenied)
    );
    s.apply(&AuthChange::RoleGrantPermission {
        role: "r".into(),
        permission: perm(PermKind::Write, "k", b""),
    })
    .expect("regrant");
    assert_eq!(s.roles["r"].permissions.len(), 1);
    assert_eq!(s.check("u", &write("k", b"")), Ok(()));
    assert_eq!(
        s.check("u", &read("k", b"")),
        Err(AuthError::PermissionDenied)
    );
    s.apply(&AuthChange::RoleRevokePermission {
        role: "r".into(),
        key: b"k".to_vec(),
        range_end: vec![],
    })
    .expect("revoke");
    assert_eq!(
        s.check("u", &write("k", b"")),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn txn_needs_both_branches_and_compares_and_prev_kv() {
    let t = TxnRequest {
        compare: vec![Compare {
            key: b"c".to_vec(),
            range_end: vec![],
            target: CompareTarget::Version(0),
            result: CompareResult::Equal,
        }],
        success: vec![TxnOp::Put(PutRequest::new("s", "v"))],
        failure: vec![TxnOp::DeleteRange(DeleteRangeRequest {
            key: b"f".to_vec(),
            range_end: vec![],
            prev_kv: true,
        })],
    };
    let op = Op::Txn(t);
    let full = needs(&op, false);
    assert!(full.contains(&Need::Read(Span::key(b"c"))));
    assert!(full.contains(&Need::Write(Span::key(b"s"))));
    assert!(full.contains(&Need::Write(Span::key(b"f"))));
    assert!(full.contains(&Need::Read(Span::key(b"f"))));
    let buggy = needs(&op, true);
    assert!(
        !buggy.contains(&Need::Write(Span::key(b"f"))),
        "the planted bug skips the else branch"
    );
    let mut put = PutRequest::new("p", "v");
    put.prev_kv = true;
    assert_eq!(
        needs(&Op::Put(put), false),
        vec![Need::Write(Span::key(b"p")), Need::Read(Span::key(b"p"))]
    );
    assert_eq!(needs(&Op::Range(RangeRequest::prefix("x")), false).len(), 1);
}

#[test]
fn password_hash_never_prints() {
    let h = PasswordHash {
        iterations: 1,
        salt: vec![1, 2],
        hash: vec![3, 4],
    };
    let shown = format!(
        "{:?}",
        User {
            password: Some(h),
            roles: BTreeSet::new()
        }
    );
    assert!(!shown.contains("[3, 4]"), "{shown}");
}
