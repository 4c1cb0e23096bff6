//! Errors of the control plane. Each carries a stable machine code, the
//! HTTP status the API answers with and its structured facts
//! ([`Error::facts`]: which sandbox, its state, the refused action, the
//! quota numbers), and reads as what / why / how to fix. Clients word
//! their own advice from the code and facts.

use std::collections::BTreeMap;

use dwell_store::State;

/// The names of the facts an error may carry ([`Error::facts`]).
pub mod fact {
    /// The sandbox's name (or the id or name that was asked for).
    pub const SANDBOX: &str = "sandbox";
    /// The sandbox's state when the request was refused.
    pub const STATE: &str = "state";
    /// The refused request (`start`, `pause`, `exec`, ...).
    pub const ACTION: &str = "action";
    /// The tenant whose quota is concerned.
    pub const TENANT: &str = "tenant";
    /// The quota's resource: `sandboxes`, `vcpus`, `memory` or `storage`.
    pub const RESOURCE: &str = "resource";
    /// The quota's limit.
    pub const LIMIT: &str = "limit";
    /// What the tenant holds.
    pub const USED: &str = "used";
    /// What the request adds.
    pub const ASKED: &str = "asked";
    /// The snapshot's id or name (as asked for).
    pub const SNAPSHOT: &str = "snapshot";
    /// A name already taken.
    pub const NAME: &str = "name";
    /// A port inside the sandbox.
    pub const PORT: &str = "port";
    /// The private network's name (or the id or name asked for).
    pub const NETWORK: &str = "network";
    /// A named volume's name as asked for.
    pub const VOLUME: &str = "volume";
    /// The failing step of a build (1-based).
    pub const STEP: &str = "step";
    /// The exit code of a build's failing RUN step.
    pub const EXIT_CODE: &str = "exit_code";
    /// The image reference concerned.
    pub const IMAGE: &str = "image";
    /// The registry host concerned.
    pub const REGISTRY: &str = "registry";
}

/// A control-plane failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No live sandbox of this tenant has that id or name. Deliberately the
    /// same whether it never existed or belongs to someone else.
    #[error("no sandbox named or with id {0:?}")]
    NotFound(String),
    /// No snapshot of this tenant has that id or name.
    #[error("no snapshot has the id or name {0:?}")]
    SnapshotNotFound(String),
    /// No tenant has that name.
    #[error("no tenant is named {0:?}")]
    TenantNotFound(String),
    /// The sandbox has no service (see [`crate::service`]).
    #[error("sandbox {0} has no service: its image has no start command, or it was created with --no-service; create one with --entrypoint/--cmd (or `-- CMD`)")]
    NoService(String),
    /// The port of the sandbox is not exposed through the port proxy.
    #[error("port {port} of sandbox {sandbox} is not exposed; `dwell port {sandbox}` lists what is, `dwell expose {sandbox} {port}` exposes it")]
    PortNotExposed { sandbox: String, port: u16 },
    /// No private network of this tenant has that id or name (the same
    /// whether it never existed or belongs to someone else).
    #[error(
        "no network named or with id {0:?}; create it first, or name one of the tenant's networks"
    )]
    NetworkNotFound(String),
    /// The tenant already has a network of that name.
    #[error(
        "the tenant already has a network named {0:?}; pick another name or remove that network"
    )]
    NetworkNameTaken(String),
    /// No named volume of this tenant has that name (the same whether it
    /// never existed or belongs to someone else).
    #[error("no volume named {0:?}; create it first with `dwell volume create {0} --size 10G` (`dwell volume ls` lists the tenant's volumes)")]
    VolumeNotFound(String),
    /// The tenant already has a volume of that name.
    #[error(
        "the tenant already has a volume named {0:?}; pick another name or remove that volume"
    )]
    VolumeNameTaken(String),
    /// The volume is used by sandboxes (running or not).
    #[error("volume {volume} is used by {} sandbox(es): {}; delete those sandboxes first (a volume outlives the sandboxes that use it, and is never removed with them)", .users.len(), .users.join(", "))]
    VolumeInUse { volume: String, users: Vec<String> },
    /// The request is malformed or out of range.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// The request does not fit the sandbox's current state.
    #[error("{0}")]
    Conflict(String),
    /// The sandbox's state does not allow the request (see
    /// [`crate::transitions`]).
    #[error("{message}")]
    Refused {
        sandbox: String,
        state: State,
        /// The refused request (`start`, `pause`, `exec`, ...).
        action: &'static str,
        message: String,
    },
    /// The sandbox is paused or hibernated and does not wake on use (its
    /// `auto_resume` is off, or a user paused it): it must be resumed
    /// first.
    #[error("{message}")]
    Asleep {
        sandbox: String,
        state: State,
        /// What needed it running (`exec`, `file read`, ...).
        action: String,
        message: String,
    },
    /// A tenant quota would be exceeded.
    #[error("{}", .0.message)]
    Quota(Box<QuotaExceeded>),
    /// An image that live sandboxes use cannot be removed.
    #[error(
        "image {image} is used by sandboxes {}; delete them first, then remove the image",
        .sandboxes.join(", ")
    )]
    ImageInUse {
        image: String,
        /// `tenant/name` of each sandbox using it.
        sandboxes: Vec<String>,
    },
    /// The tenant has no stored login to that registry.
    #[error("no login to registry {0} is stored for this tenant; `dwell registry ls` lists them")]
    RegistryLoginNotFound(String),
    /// The registry refused the pull's credentials, or needs some.
    #[error("{message}")]
    RegistryAuth {
        registry: String,
        image: String,
        message: String,
    },
    /// This daemon may not pull from that registry (`--allowed-registries`).
    #[error(
        "this daemon does not pull from registry {registry} (image {image}); its operator allows \
         only the registries named with `dwell serve --allowed-registries`"
    )]
    RegistryNotAllowed { registry: String, image: String },
    /// The registry has no such repository, tag or digest.
    #[error("{message}")]
    NotInRegistry { image: String, message: String },
    /// A pull failed (unreachable registry, bad or tampered content).
    #[error("{message}")]
    PullFailed { image: String, message: String },
    /// A name already used by a live sandbox.
    #[error("a sandbox named {0:?} already exists; pick another name or remove that sandbox")]
    NameTaken(String),
    /// The runtime failed.
    #[error("runtime: {0}")]
    Runtime(#[from] dwell_runtime::Error),
    /// Volumes or images failed.
    #[error("storage: {0}")]
    Storage(#[from] dwell_storage::StorageError),
    /// The agent inside the sandbox failed or is unreachable.
    #[error("agent: {0}")]
    Agent(#[from] dwell_proto::Error),
    /// The metadata store failed.
    #[error("{0}")]
    Store(dwell_store::Error),
    /// Something else went wrong inside the daemon.
    #[error("{0}")]
    Internal(String),
    /// No node of the cluster can take the request now (placement found
    /// no room, or the owner of a sandbox is unreachable or lost).
    #[error("{0}")]
    Unavailable(String),
    /// A build step failed: a RUN exited non-zero (`exit_code`), a COPY
    /// source is missing, a step wrote something refused. `status` is the
    /// HTTP status (422, or 413 for a step over the build's limits).
    #[error("{message}")]
    BuildFailed {
        step: usize,
        exit_code: Option<i32>,
        message: String,
        status: u16,
    },
}

/// What a refused request would have held beyond a tenant's quota.
#[derive(Debug)]
pub struct QuotaExceeded {
    pub tenant: String,
    /// `sandboxes`, `vcpus`, `memory` or `storage`.
    pub resource: String,
    pub limit: String,
    pub used: String,
    pub asked: String,
    pub message: String,
}

impl From<dwell_store::Error> for Error {
    fn from(e: dwell_store::Error) -> Self {
        match e {
            dwell_store::Error::NameTaken(n) => Error::NameTaken(n),
            dwell_store::Error::NetworkNameTaken(n) => Error::NetworkNameTaken(n),
            dwell_store::Error::VolumeNameTaken(n) => Error::VolumeNameTaken(n),
            e => Error::Store(e),
        }
    }
}

impl Error {
    /// Stable code for API clients.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_)
            | Error::SnapshotNotFound(_)
            | Error::TenantNotFound(_)
            | Error::PortNotExposed { .. }
            | Error::NoService(_)
            | Error::NetworkNotFound(_)
            | Error::VolumeNotFound(_) => "not_found",
            Error::VolumeInUse { .. } => "volume_in_use",
            Error::Runtime(dwell_runtime::Error::Unsupported { .. }) => "unsupported",
            Error::Invalid { .. } => "invalid_argument",
            Error::Conflict(_) | Error::Refused { .. } => "conflict",
            Error::Asleep { .. } => "sandbox_paused",
            Error::NameTaken(_) | Error::NetworkNameTaken(_) | Error::VolumeNameTaken(_) => {
                "name_taken"
            }
            Error::Quota(_) => "quota_exceeded",
            Error::Runtime(_) => "runtime_error",
            Error::ImageInUse { .. }
            | Error::Storage(dwell_storage::StorageError::ImageIsBase { .. }) => "image_in_use",
            Error::RegistryLoginNotFound(_) => "not_found",
            Error::RegistryNotAllowed { .. } => "permission_denied",
            Error::RegistryAuth { .. } => "registry_auth_failed",
            Error::NotInRegistry { .. } => "image_not_in_registry",
            Error::PullFailed { .. } => "image_pull_failed",
            Error::Storage(dwell_storage::StorageError::ImageNotFound(_)) => "image_not_found",
            Error::Storage(dwell_storage::StorageError::InvalidReference { .. }) => {
                "invalid_image_reference"
            }
            Error::Storage(dwell_storage::StorageError::ImageExists(_)) => "image_exists",
            Error::Storage(_) => "storage_error",
            Error::Agent(_) => "agent_error",
            Error::Store(_) => "store_error",
            Error::Internal(_) => "internal",
            Error::Unavailable(_) => "unavailable",
            Error::BuildFailed { .. } => "build_failed",
        }
    }

    /// HTTP status for the API.
    pub fn status(&self) -> u16 {
        match self {
            Error::NotFound(_)
            | Error::SnapshotNotFound(_)
            | Error::TenantNotFound(_)
            | Error::PortNotExposed { .. }
            | Error::NoService(_)
            | Error::NetworkNotFound(_)
            | Error::VolumeNotFound(_)
            | Error::Storage(dwell_storage::StorageError::ImageNotFound(_)) => 404,
            Error::Storage(dwell_storage::StorageError::InvalidReference { .. }) => 400,
            Error::RegistryLoginNotFound(_) | Error::NotInRegistry { .. } => 404,
            Error::RegistryAuth { .. } => 401,
            Error::RegistryNotAllowed { .. } => 403,
            Error::PullFailed { .. } => 502,
            Error::ImageInUse { .. }
            | Error::Storage(dwell_storage::StorageError::ImageExists(_))
            | Error::Storage(dwell_storage::StorageError::ImageIsBase { .. }) => 409,
            Error::Invalid { .. } => 400,
            Error::Conflict(_)
            | Error::Refused { .. }
            | Error::Asleep { .. }
            | Error::NameTaken(_)
            | Error::NetworkNameTaken(_)
            | Error::VolumeNameTaken(_)
            | Error::VolumeInUse { .. } => 409,
            Error::Runtime(dwell_runtime::Error::Unsupported { .. }) => 409,
            Error::Quota(_) => 403,
            Error::Agent(_) => 502,
            Error::Unavailable(_) => 503,
            Error::BuildFailed { status, .. } => *status,
            _ => 500,
        }
    }

    /// The structured facts of the error, by name ([`fact`]): empty for
    /// errors that carry none.
    pub fn facts(&self) -> BTreeMap<&'static str, String> {
        let mut f = BTreeMap::new();
        match self {
            Error::NotFound(id) => {
                f.insert(fact::SANDBOX, id.clone());
            }
            Error::NoService(name) => {
                f.insert(fact::SANDBOX, name.clone());
            }
            Error::SnapshotNotFound(id) => {
                f.insert(fact::SNAPSHOT, id.clone());
            }
            Error::TenantNotFound(name) => {
                f.insert(fact::TENANT, name.clone());
            }
            Error::NameTaken(name) => {
                f.insert(fact::NAME, name.clone());
            }
            Error::PortNotExposed { sandbox, port } => {
                f.insert(fact::SANDBOX, sandbox.clone());
                f.insert(fact::PORT, port.to_string());
            }
            Error::NetworkNotFound(name) => {
                f.insert(fact::NETWORK, name.clone());
            }
            Error::ImageInUse { image, .. }
            | Error::NotInRegistry { image, .. }
            | Error::PullFailed { image, .. } => {
                f.insert(fact::IMAGE, image.clone());
            }
            Error::RegistryAuth {
                registry, image, ..
            }
            | Error::RegistryNotAllowed { registry, image } => {
                f.insert(fact::REGISTRY, registry.clone());
                f.insert(fact::IMAGE, image.clone());
            }
            Error::RegistryLoginNotFound(registry) => {
                f.insert(fact::REGISTRY, registry.clone());
            }
            Error::Storage(dwell_storage::StorageError::ImageNotFound(image))
            | Error::Storage(dwell_storage::StorageError::ImageIsBase { image, .. }) => {
                f.insert(fact::IMAGE, image.clone());
            }
            Error::NetworkNameTaken(name) => {
                f.insert(fact::NAME, name.clone());
                f.insert(fact::NETWORK, name.clone());
            }
            Error::VolumeNotFound(name) => {
                f.insert(fact::VOLUME, name.clone());
            }
            Error::VolumeNameTaken(name) => {
                f.insert(fact::NAME, name.clone());
                f.insert(fact::VOLUME, name.clone());
            }
            Error::VolumeInUse { volume, users } => {
                f.insert(fact::VOLUME, volume.clone());
                f.insert(fact::SANDBOX, users.join(","));
            }
            Error::Refused {
                sandbox,
                state,
                action,
                ..
            } => {
                f.insert(fact::SANDBOX, sandbox.clone());
                f.insert(fact::STATE, state.as_str().to_string());
                f.insert(fact::ACTION, action.to_string());
            }
            Error::Asleep {
                sandbox,
                state,
                action,
                ..
            } => {
                f.insert(fact::SANDBOX, sandbox.clone());
                f.insert(fact::STATE, state.as_str().to_string());
                f.insert(fact::ACTION, action.clone());
            }
            Error::Quota(q) => {
                f.insert(fact::TENANT, q.tenant.clone());
                f.insert(fact::RESOURCE, q.resource.clone());
                f.insert(fact::LIMIT, q.limit.clone());
                f.insert(fact::USED, q.used.clone());
                f.insert(fact::ASKED, q.asked.clone());
            }
            Error::BuildFailed {
                step, exit_code, ..
            } => {
                f.insert(fact::STEP, step.to_string());
                if let Some(c) = exit_code {
                    f.insert(fact::EXIT_CODE, c.to_string());
                }
            }
            _ => {}
        }
        f
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
