//! dwell sandboxes as the E2B API shows them.

use dwell_control::policy::Action;
use dwell_control::{Sandbox, State};

use crate::wire;
use crate::{E2bState, CLIENT_ID, ENVD_VERSION};

/// The label that keeps the template a sandbox was created from (E2B
/// metadata keys may not use the `e2b.` prefix: it is dwell's).
pub const LABEL_TEMPLATE: &str = "e2b.template";
/// Prefix of the labels reserved for this layer.
pub const RESERVED_PREFIX: &str = "e2b.";

/// The end of time as E2B's `endAt` (a sandbox without a deadline).
const NO_DEADLINE_MS: i64 = 253_402_300_799_000;

/// E2B's state of a dwell state: `running` or `paused`; `None` for a
/// deleted sandbox.
pub fn e2b_state(s: State) -> Option<&'static str> {
    match s {
        State::Running | State::Creating => Some("running"),
        // A stopped (or failed) sandbox keeps its files; connect starts it
        // again.
        State::Paused | State::Hibernated | State::Stopped | State::Error | State::Archived => {
            Some("paused")
        }
        State::Deleted => None,
    }
}

/// The template id of a sandbox.
pub fn template_of(sb: &Sandbox) -> String {
    match sb.spec.labels.get(LABEL_TEMPLATE) {
        Some(t) => t.clone(),
        None if dwell_storage::is_builtin(&sb.image) => crate::BASE_TEMPLATE.to_string(),
        None => sb.image.clone(),
    }
}

/// The user's metadata (labels without the reserved ones).
pub fn metadata_of(sb: &Sandbox) -> std::collections::BTreeMap<String, String> {
    sb.spec
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// When the sandbox times out (Unix ms).
pub fn end_ms(sb: &Sandbox) -> i64 {
    match sb.schedule.iter().find(|s| s.policy == "ttl") {
        Some(s) => s.at,
        None if sb.state != State::Running => sb.state_changed_at,
        None => NO_DEADLINE_MS,
    }
}

/// What the sandbox does at its deadline: E2B's `onTimeout`. Only a delete
/// is E2B's `kill`; a pause, stop or archive keeps the sandbox, which the
/// E2B API then shows as paused.
pub fn on_timeout(sb: &Sandbox) -> &'static str {
    match crate::lifetime::effective_action(sb) {
        Action::Delete => "kill",
        Action::Pause | Action::Stop | Action::Archive => "pause",
    }
}

/// The create/connect answer.
pub fn sandbox(st: &E2bState, sb: &Sandbox) -> Result<wire::Sandbox, dwell_control::Error> {
    Ok(wire::Sandbox {
        template_id: template_of(sb),
        sandbox_id: sb.id.clone(),
        client_id: CLIENT_ID.into(),
        alias: None,
        envd_version: ENVD_VERSION.into(),
        envd_access_token: st.ctl.sandbox_token(&sb.id)?,
        traffic_access_token: st.ctl.traffic_token_of(&sb.id)?,
        domain: st.opts.domain.clone(),
    })
}

/// A list item (`detail` adds the fields of `GET /sandboxes/{id}`).
pub fn listed(sb: &Sandbox, state: &'static str) -> wire::Listed {
    wire::Listed {
        template_id: template_of(sb),
        sandbox_id: sb.id.clone(),
        client_id: CLIENT_ID.into(),
        alias: None,
        started_at: crate::time::format_ms(sb.created_at),
        end_at: crate::time::format_ms(end_ms(sb)),
        cpu_count: sb.spec.vcpus.ceil().max(1.0) as u64,
        memory_mb: sb.spec.memory_bytes >> 20,
        disk_size_mb: sb.spec.disk_bytes >> 20,
        metadata: metadata_of(sb),
        state,
        envd_version: ENVD_VERSION.into(),
        volume_mounts: Vec::new(),
        detail: None,
    }
}

/// The answer of `GET /sandboxes/{id}`.
pub fn detail(
    st: &E2bState,
    sb: &Sandbox,
    state: &'static str,
) -> Result<wire::Listed, dwell_control::Error> {
    let mut l = listed(sb, state);
    l.detail = Some(wire::Detail {
        envd_access_token: st.ctl.sandbox_token(&sb.id)?,
        domain: st.opts.domain.clone(),
        allow_internet_access: sb.spec.network == dwell_runtime::NetworkMode::Nat,
        lifecycle: wire::Lifecycle {
            // Asleep: whether it wakes now; else what its policy says (unset:
            // it wakes after a policy, such as the timeout, paused it).
            auto_resume: sb
                .wakes_on_use
                .unwrap_or(sb.spec.policies.auto_resume.unwrap_or(true)),
            on_timeout: on_timeout(sb),
        },
        // The namespace runtime freezes processes in RAM: memory is kept.
        // A stopped sandbox kept only its files.
        pause_mode: match sb.state {
            State::Paused => Some("full"),
            State::Stopped => Some("filesystem"),
            _ => None,
        },
        network: {
            let all_ports = st.ctl.all_ports_exposure(&sb.id)?;
            wire::NetworkInfo {
                allow_out: sb.spec.egress.allow.clone(),
                deny_out: sb.spec.egress.deny.clone(),
                allow_public_traffic: all_ports.as_ref().is_none_or(|e| e.public),
                mask_request_host: all_ports.and_then(|e| e.host_header),
            }
        },
    });
    Ok(l)
}
