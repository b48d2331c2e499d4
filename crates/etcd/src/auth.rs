//! etcd's Auth service: enabling auth, authenticating (simple tokens), and administering users,
//! roles and permissions. Changes are [`AuthChange`]s decided in the log like writes; reads
//! (UserGet, RoleList, …) answer from this member's applied auth state. The model, the rules
//! and the permission check are `synod_core::auth`'s; tokens and password hashing are
//! `synod_node::auth`'s. Passwords are hashed here, before the change is proposed.
//!
//! Who may call what (etcd 3.4's rules): Authenticate and AuthEnable anyone; with auth on,
//! every other change and the lists need root, and a user may read its own user and the
//! roles it holds.

use crate::error::{api_error_to_status, auth_error_to_status};
use crate::pb::authpb;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::auth_server::Auth;
use crate::service::EtcdService;
use synod_core::Consistency;
use synod_core::auth::{AuthChange, AuthError, AuthState, PermKind, Permission};
use synod_core::kv::{Op, ResponseBody};
use synod_node::auth::{Caller, current, hash_password};
use tonic::{Request, Response, Status};

impl EtcdService {
    /// Proposes `change` (root-only when auth is on: the node's check) and waits for it.
    async fn auth_change(&self, change: AuthChange) -> Result<pb::ResponseHeader, Status> {
        let reply = self
            .handle
            .execute(Op::Auth(change), Consistency::Linearizable)
            .await
            .map_err(|e| api_error_to_status(&e))?;
        match reply.body {
            ResponseBody::Auth { .. } => Ok(self.header_at(reply.revision)),
            other => Err(Status::internal(format!(
                "synod: expected an auth reply, got {other:?}"
            ))),
        }
    }

    /// The applied auth state, if the caller may read what `allowed` says (root always).
    fn auth_read(&self, allowed: impl Fn(&AuthState, &str) -> bool) -> Result<AuthState, Status> {
        let gate = self.handle.auth();
        let state = gate.state();
        if !gate.enabled() {
            return Ok((*state).clone());
        }
        match current() {
            Caller::Member => Ok((*state).clone()),
            Caller::User(u) if state.is_root(&u) || allowed(&state, &u) => Ok((*state).clone()),
            Caller::User(_) => Err(auth_error_to_status(AuthError::PermissionDenied)),
            Caller::InvalidToken => Err(auth_error_to_status(AuthError::InvalidAuthToken)),
            Caller::Anonymous => Err(auth_error_to_status(AuthError::UserEmpty)),
        }
    }

    /// A password hashed off the async threads (the hash is deliberately slow).
    async fn hashed(
        &self,
        password: String,
    ) -> Result<Option<synod_core::auth::PasswordHash>, Status> {
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| Status::internal(format!("synod: password hasher: {e}")))?;
        hash.map(Some).map_err(|e| api_error_to_status(&e))
    }
}

fn perm_kind(t: i32) -> Result<PermKind, Status> {
    match authpb::permission::Type::try_from(t) {
        Ok(authpb::permission::Type::Read) => Ok(PermKind::Read),
        Ok(authpb::permission::Type::Write) => Ok(PermKind::Write),
        Ok(authpb::permission::Type::Readwrite) => Ok(PermKind::ReadWrite),
        Err(_) => Err(Status::invalid_argument(format!(
            "synod: invalid request: permission type {t}"
        ))),
    }
}

fn perm_pb(p: &Permission) -> authpb::Permission {
    let t = match p.kind {
        PermKind::Read => authpb::permission::Type::Read,
        PermKind::Write => authpb::permission::Type::Write,
        PermKind::ReadWrite => authpb::permission::Type::Readwrite,
    };
    authpb::Permission {
        perm_type: t as i32,
        key: p.key.clone(),
        range_end: p.range_end.clone(),
    }
}

#[tonic::async_trait]
impl Auth for EtcdService {
    async fn auth_enable(
        &self,
        _request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        self.observe("auth_enable", async {
            // Already on: nothing to decide (etcd answers success).
            if self.handle.auth().enabled() {
                return Ok(pb::AuthEnableResponse {
                    header: Some(self.header_now()),
                });
            }
            let header = self.auth_change(AuthChange::Enable).await?;
            Ok(pb::AuthEnableResponse {
                header: Some(header),
            })
        })
        .await
    }

    async fn auth_disable(
        &self,
        _request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        self.observe("auth_disable", async {
            let header = self.auth_change(AuthChange::Disable).await?;
            Ok(pb::AuthDisableResponse {
                header: Some(header),
            })
        })
        .await
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        self.observe("authenticate", async {
            let r = request.into_inner();
            let gate = self.handle.auth().clone();
            let token =
                tokio::task::spawn_blocking(move || gate.authenticate(&r.name, &r.password))
                    .await
                    .map_err(|e| Status::internal(format!("synod: authenticator: {e}")))?
                    .map_err(auth_error_to_status)?;
            Ok(pb::AuthenticateResponse {
                header: Some(self.header_now()),
                token,
            })
        })
        .await
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        self.observe("user_add", async {
            let r = request.into_inner();
            let no_password = r.options.is_some_and(|o| o.no_password);
            // Checked before the (slow) hash, so a refused caller costs nothing.
            self.require_root()?;
            if r.name.is_empty() {
                return Err(auth_error_to_status(AuthError::UserEmpty));
            }
            let password = if no_password {
                None
            } else {
                self.hashed(r.password).await?
            };
            let change = AuthChange::UserAdd {
                name: r.name,
                password,
            };
            let header = self.auth_change(change).await?;
            Ok(pb::AuthUserAddResponse {
                header: Some(header),
            })
        })
        .await
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        self.observe("user_get", async {
            let name = request.into_inner().name;
            let state = self.auth_read(|_, me| me == name)?;
            let user = state
                .users
                .get(&name)
                .ok_or_else(|| auth_error_to_status(AuthError::UserNotFound))?;
            Ok(pb::AuthUserGetResponse {
                header: Some(self.header_now()),
                roles: user.roles.iter().cloned().collect(),
            })
        })
        .await
    }

    async fn user_list(
        &self,
        _request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        self.observe("user_list", async {
            let state = self.auth_read(|_, _| false)?;
            Ok(pb::AuthUserListResponse {
                header: Some(self.header_now()),
                users: state.users.keys().cloned().collect(),
            })
        })
        .await
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        self.observe("user_delete", async {
            let name = request.into_inner().name;
            let header = self.auth_change(AuthChange::UserDelete { name }).await?;
            Ok(pb::AuthUserDeleteResponse {
                header: Some(header),
            })
        })
        .await
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        self.observe("user_change_password", async {
            let r = request.into_inner();
            self.require_root()?;
            let password = self.hashed(r.password).await?;
            let change = AuthChange::UserChangePassword {
                name: r.name,
                password,
            };
            let header = self.auth_change(change).await?;
            Ok(pb::AuthUserChangePasswordResponse {
                header: Some(header),
            })
        })
        .await
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        self.observe("user_grant_role", async {
            let r = request.into_inner();
            let change = AuthChange::UserGrantRole {
                user: r.user,
                role: r.role,
            };
            let header = self.auth_change(change).await?;
            Ok(pb::AuthUserGrantRoleResponse {
                header: Some(header),
            })
        })
        .await
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        self.observe("user_revoke_role", async {
            let r = request.into_inner();
            let change = AuthChange::UserRevokeRole {
                user: r.name,
                role: r.role,
            };
            let header = self.auth_change(change).await?;
            Ok(pb::AuthUserRevokeRoleResponse {
                header: Some(header),
            })
        })
        .await
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        self.observe("role_add", async {
            let name = request.into_inner().name;
            let header = self.auth_change(AuthChange::RoleAdd { name }).await?;
            Ok(pb::AuthRoleAddResponse {
                header: Some(header),
            })
        })
        .await
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        self.observe("role_get", async {
            let role = request.into_inner().role;
            let state =
                self.auth_read(|s, me| s.users.get(me).is_some_and(|u| u.roles.contains(&role)))?;
            let r = state
                .roles
                .get(&role)
                .ok_or_else(|| auth_error_to_status(AuthError::RoleNotFound))?;
            Ok(pb::AuthRoleGetResponse {
                header: Some(self.header_now()),
                perm: r.permissions.iter().map(perm_pb).collect(),
            })
        })
        .await
    }

    async fn role_list(
        &self,
        _request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        self.observe("role_list", async {
            let state = self.auth_read(|_, _| false)?;
            Ok(pb::AuthRoleListResponse {
                header: Some(self.header_now()),
                roles: state.roles.keys().cloned().collect(),
            })
        })
        .await
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        self.observe("role_delete", async {
            let name = request.into_inner().role;
            let header = self.auth_change(AuthChange::RoleDelete { name }).await?;
            Ok(pb::AuthRoleDeleteResponse {
                header: Some(header),
            })
        })
        .await
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        self.observe("role_grant_permission", async {
            let r = request.into_inner();
            let perm = r.perm.ok_or_else(|| {
                Status::invalid_argument("synod: invalid request: permission is not provided")
            })?;
            let permission = Permission {
                kind: perm_kind(perm.perm_type)?,
                key: perm.key,
                range_end: perm.range_end,
            };
            let change = AuthChange::RoleGrantPermission {
                role: r.name,
                permission,
            };
            let header = self.auth_change(change).await?;
            Ok(pb::AuthRoleGrantPermissionResponse {
                header: Some(header),
            })
        })
        .await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        self.observe("role_revoke_permission", async {
            let r = request.into_inner();
            let change = AuthChange::RoleRevokePermission {
                role: r.role,
                key: r.key,
                range_end: r.range_end,
            };
            let header = self.auth_change(change).await?;
            Ok(pb::AuthRoleRevokePermissionResponse {
                header: Some(header),
            })
        })
        .await
    }
}
