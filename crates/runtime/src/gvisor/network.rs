//! NAT networking of a gVisor sandbox. Before `runsc run` (and `runsc
//! restore`) the runtime creates a network namespace for the sandbox,
//! pins it as the file `state_dir/netns` (a bind mount of a thread's
//! `/proc/thread-self/ns/net`) and sets it up as the namespace runtime
//! sets up its sandboxes ([`crate::host::network`]: veth pair with `eth0` inside, a /30 from
//! the NAT pool, an nftables table of its own). The bundle names that file
//! as the container's network namespace, and runsc runs with
//! `--network=sandbox`: gVisor's own network stack takes over `eth0`, its
//! address and its routes when the sandbox boots.
//!
//! A sandbox on private networks (see [`crate::host::private_net`]) gets
//! its `ethN` interfaces in the same namespace; without NAT the namespace
//! holds those and loopback only ([`setup_all`]).
//!
//! A checkpoint does not keep the host side: [`teardown`] removes the veth,
//! the table and the namespace whenever the sandbox stops (hibernation
//! included), and a restore sets all of it up anew (with the same address
//! while it is free) before `runsc restore`, which hands the new `eth0` to
//! the restored network stack. runsc runs with `--net-disconnect-ok` so
//! that a sandbox with open connections can be hibernated (they are reset).
//!
//! runsc 20240729 refuses a namespace in which
//! `/proc/sys/net/core/rmem_default` exists, taking it for the host's root
//! namespace; since Linux 6.x that file exists in every network namespace.
//! [`Runsc::hide_sysctl_net`](super::runsc::Runsc) runs those runsc calls
//! in a mount namespace of their own with an empty `/proc/sys/net`. The
//! runtime itself guarantees the namespace is not the host's.

use std::path::{Path, PathBuf};

use crate::error::Context;
use crate::host::{layout, network, Host};
use crate::{Error, Result, SandboxConfig};

/// The pinned network namespace of a NAT sandbox (state dir).
pub const NETNS_FILE: &str = "netns";

/// The pinned namespace file of `config`.
pub fn netns_path(config: &SandboxConfig) -> PathBuf {
    layout::state_file(config, NETNS_FILE)
}

/// Create and pin a network namespace, set up the veth pair, addresses,
/// routes and the nftables table (with the sandbox's egress rules), and
/// return the namespace file and what was set up. On error nothing of it
/// is left.
pub fn setup(
    host: &dyn Host,
    config: &SandboxConfig,
    pool: &str,
    deny: &[String],
) -> Result<(PathBuf, network::NetInfo)> {
    network::check_forwarding()?;
    // Whatever a crash left (a pinned namespace, a veth) goes first.
    teardown_on(host, config);
    let path = netns_path(config);
    pin_new_netns(host, &path)?;
    let set_up = host
        .net_setup(
            &config.id,
            network::Netns::Path(&path),
            pool,
            deny,
            &config.state_dir,
        )
        .and_then(|info| {
            crate::host::egress::install(&config.id, &config.egress)?;
            Ok(info)
        });
    match set_up {
        Ok(info) => Ok((path, info)),
        Err(e) => {
            host.net_teardown(&config.id);
            unpin(host, &path);
            Err(e)
        }
    }
}

/// Whether `config` needs a network namespace of its own (runsc then
/// runs with `--network=sandbox`): NAT, or any private network.
pub fn needs_netns(config: &SandboxConfig) -> bool {
    config.network == crate::NetworkMode::Nat || !config.private_nets.is_empty()
}

/// [`setup`] for a NAT sandbox, else a pinned namespace with loopback
/// only; then the private networks' interfaces in it. Returns the
/// namespace file and the NAT network (None without NAT), or None when
/// the sandbox needs no namespace ([`needs_netns`]). On error nothing of
/// it is left.
pub fn setup_all(
    host: &dyn Host,
    config: &SandboxConfig,
    pool: &str,
    deny: &[String],
) -> Result<Option<(PathBuf, Option<network::NetInfo>)>> {
    if !needs_netns(config) {
        return Ok(None);
    }
    let (path, info) = if config.network == crate::NetworkMode::Nat {
        let (path, info) = setup(host, config, pool, deny)?;
        (path, Some(info))
    } else {
        teardown_on(host, config);
        let path = netns_path(config);
        pin_new_netns(host, &path)?;
        (path, None)
    };
    if let Err(e) = host.private_setup(
        &config.id,
        network::Netns::Path(&path),
        &config.private_nets,
        &config.state_dir,
    ) {
        teardown_on(host, config);
        return Err(e);
    }
    Ok(Some((path, info)))
}

/// Remove the veth, the table, the private networks' ports and the pinned
/// namespace of `config`, if any exist. Cheap when there is nothing (no
/// process is run).
pub fn teardown_on(host: &dyn Host, config: &SandboxConfig) {
    host.private_teardown(&config.state_dir);
    let path = netns_path(config);
    if path.exists() || host.has_veth(&config.id) {
        host.net_teardown(&config.id);
        unpin(host, &path);
    }
}

/// Unmount and remove a pinned namespace file.
fn unpin(host: &dyn Host, path: &Path) {
    let _ = host.unmount(path, libc::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// Make a new network namespace and bind-mount it onto `path` (created
/// here; removed again on error).
fn pin_new_netns(host: &dyn Host, path: &Path) -> Result<()> {
    std::fs::File::create(path).context(|| format!("creating {}", path.display()))?;
    if let Err(e) = host.pin_netns(path) {
        let _ = std::fs::remove_file(path);
        return Err(Error::Io {
            context: format!(
                "creating the sandbox's network namespace and pinning it at {}",
                path.display()
            ),
            source: e,
        });
    }
    Ok(())
}

/// Give the bundle's network namespace entry the path of `netns`, and
/// the agent the address of its DNS resolver (the gateway of a NAT
/// sandbox, see [`crate::DNS_ENV`]; a sandbox on private networks only
/// has none).
pub fn join_in_spec(spec: &mut serde_json::Value, netns: &Path, info: Option<&network::NetInfo>) {
    if let (Some(env), Some(info)) = (spec["process"]["env"].as_array_mut(), info) {
        env.retain(|v| {
            !v.as_str()
                .is_some_and(|s| s.starts_with(&format!("{}=", crate::DNS_ENV)))
        });
        env.push(serde_json::json!(format!(
            "{}={}",
            crate::DNS_ENV,
            info.gateway_ip
        )));
    }
    if let Some(list) = spec["linux"]["namespaces"].as_array_mut() {
        for ns in list {
            if ns["type"] == "network" {
                ns["path"] = serde_json::json!(netns);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Kernel;

    #[test]
    fn spec_joins_the_pinned_namespace() {
        let mut spec = serde_json::json!({"linux": {"namespaces": [
            {"type": "pid"}, {"type": "network"}
        ]}, "process": {"env": ["A=b"]}});
        let info = network::NetInfo {
            host_if: "dw1".into(),
            table: "dwell_dw1".into(),
            sandbox_ip: "10.200.0.2".parse().unwrap(),
            gateway_ip: "10.200.0.1".parse().unwrap(),
            prefix_len: 30,
        };
        join_in_spec(&mut spec, Path::new("/s/netns"), Some(&info));
        assert_eq!(spec["linux"]["namespaces"][1]["path"], "/s/netns");
        assert_eq!(spec["process"]["env"][1], "DWELL_DNS=10.200.0.1");
        assert!(spec["linux"]["namespaces"][0].get("path").is_none());
    }

    #[test]
    fn pinned_namespace_is_a_new_one() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netns");
        pin_new_netns(&Kernel, &path).unwrap();
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let mine = ino(Path::new("/proc/self/ns/net"));
        let pinned = ino(&path);
        unpin(&Kernel, &path);
        assert_ne!(mine, pinned);
        assert!(!path.exists());
    }
}
