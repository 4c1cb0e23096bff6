//! Forking a sandbox: new, independent sandboxes that start where it is.
//! Where its runtime saves memory (gVisor), each fork is a warm copy: the
//! sandbox is hibernated, copied as a memory template
//! ([`crate::templates`]) and resumed, so the forks continue its
//! processes. Elsewhere each fork is a cold copy of its files: a snapshot
//! of its volume (taken live, the sandbox frozen while it is read) fills
//! each fork, which then boots; the snapshot is deleted afterwards.
//!
//! Each fork is a create of its own: quotas apply to each, and one that
//! fails leaves nothing behind (the others stand). A fork that cannot
//! begin (no such sandbox, a capture refused) makes nothing.

use super::Controller;
use crate::error::{Error, Result};
use crate::model::{CreateRequest, Sandbox, SizeArg, State};

impl Controller {
    /// Fork sandbox `id_or_name` of `tenant` `count` times. `copy` gives
    /// what each fork has of its own (labels, policies, mode, env);
    /// image, runtime, resources, network and egress rules are the
    /// sandbox's. One result per fork, in order.
    pub async fn fork(
        &self,
        tenant: &str,
        id_or_name: &str,
        count: usize,
        copy: &CreateRequest,
    ) -> Result<Vec<Result<Sandbox>>> {
        if count == 0 {
            return Err(Error::invalid("count", "give at least 1 fork"));
        }
        let src = self.get(tenant, id_or_name)?;
        self.here(src.node.as_deref(), &src.name)?;
        let saves_memory = crate::runtimes::capabilities(&src.runtime)
            .hibernate
            .is_some();
        match src.state {
            State::Running if saves_memory => self.fork_warm(tenant, &src, count, copy).await,
            State::Hibernated => self.copies(tenant, &src.id, count, copy).await,
            State::Running | State::Paused | State::Stopped => {
                self.fork_cold(tenant, &src, count, copy).await
            }
            s => Err(Error::Conflict(format!(
                "sandbox {} is {}; fork a running, paused or stopped sandbox",
                src.name,
                s.as_str()
            ))),
        }
    }

    /// Hibernate `src`, copy it warm, and resume it.
    async fn fork_warm(
        &self,
        tenant: &str,
        src: &Sandbox,
        count: usize,
        copy: &CreateRequest,
    ) -> Result<Vec<Result<Sandbox>>> {
        self.hibernate(tenant, &src.id).await?;
        let forks = self.copies(tenant, &src.id, count, copy).await;
        if let Err(e) = self.resume(tenant, &src.id).await {
            // The forks stand; the source stays hibernated and wakes when
            // it is resumed or used.
            tracing::warn!(sandbox = %src.id, "resuming after a fork failed: {e}");
        }
        forks
    }

    /// Copy the hibernated `src` warm, `count` times.
    async fn copies(
        &self,
        tenant: &str,
        src: &str,
        count: usize,
        copy: &CreateRequest,
    ) -> Result<Vec<Result<Sandbox>>> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let req = CreateRequest {
                name: None,
                from: Some(src.to_string()),
                ..copy.clone()
            };
            out.push(self.create(tenant, req).await);
        }
        Ok(out)
    }

    /// Snapshot `src`'s files, fill `count` new sandboxes from it, delete
    /// the snapshot.
    async fn fork_cold(
        &self,
        tenant: &str,
        src: &Sandbox,
        count: usize,
        copy: &CreateRequest,
    ) -> Result<Vec<Result<Sandbox>>> {
        let snap = self.snapshot_create(tenant, &src.id, None).await?;
        let nat = src.spec.network == dwell_runtime::NetworkMode::Nat;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let req = CreateRequest {
                name: None,
                from: Some(snap.id.clone()),
                image: Some(src.image.clone()),
                runtime: Some(src.runtime.clone()),
                vcpus: Some(src.spec.vcpus),
                memory: Some(SizeArg::Bytes(src.spec.memory_bytes)),
                pids: Some(src.spec.pids),
                network: Some(src.spec.network),
                allow_raw_sockets: Some(src.spec.allow_raw_sockets),
                allow_core_dumps: Some(src.spec.allow_core_dumps),
                allow_out: nat.then(|| src.spec.egress.allow.clone()),
                deny_out: nat.then(|| src.spec.egress.deny.clone()),
                egress_precedence: nat.then_some(src.spec.egress.precedence),
                ..copy.clone()
            };
            out.push(self.create(tenant, req).await);
        }
        if let Err(e) = self.snapshot_delete(tenant, &snap.id).await {
            tracing::warn!(
                sandbox = %src.id,
                "deleting the snapshot {} a fork was filled from failed: {e}; \
                 `dwell snapshot rm {}` removes it",
                snap.id,
                snap.id
            );
        }
        Ok(out)
    }
}
