//! `dwell serve`'s cluster flags: which PostgreSQL database the nodes
//! share (`--cluster`), this node's name, where the other nodes reach it
//! (`--advertise`, served on `--node-listen`), the secret that makes a
//! daemon a node (`--cluster-secret-file`), its labels and capacity, and
//! the length of its lease.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use dwell_control::cluster::{Capacity, ClusterOptions};

/// Cluster flags of `dwell serve`.
#[derive(Debug, Clone, Args, Default)]
pub struct ClusterFlags {
    /// Join a cluster whose nodes share this PostgreSQL database
    /// (`postgres://USER:PASSWORD@HOST:PORT/DATABASE`) instead of keeping
    /// records in <data-dir>/dwell.db. Needs --advertise,
    /// --cluster-secret-file and an --object-store shared by the nodes.
    #[arg(long, env = "DWELL_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// This node's name, unique in the cluster (default: the host name).
    #[arg(
        long,
        env = "DWELL_NODE_NAME",
        value_name = "NAME",
        requires = "cluster"
    )]
    pub node_name: Option<String>,
    /// Where the other nodes reach this one (`HOST:PORT`, served on
    /// --node-listen over mutual TLS).
    #[arg(
        long,
        env = "DWELL_ADVERTISE",
        value_name = "HOST:PORT",
        requires = "cluster"
    )]
    pub advertise: Option<String>,
    /// Where to serve the other nodes (default: 0.0.0.0 and the port of
    /// --advertise).
    #[arg(
        long,
        env = "DWELL_NODE_LISTEN",
        value_name = "ADDR",
        requires = "cluster"
    )]
    pub node_listen: Option<String>,
    /// The CA certificate(s) of the PostgreSQL server (PEM): the store's
    /// connections then use TLS and check the server's certificate and
    /// name against it. Without it they are plain (keep the database on a
    /// trusted network), and a URL with `sslmode=require` is refused.
    #[arg(
        long,
        env = "DWELL_CLUSTER_CA",
        value_name = "FILE",
        requires = "cluster"
    )]
    pub cluster_ca: Option<PathBuf>,
    /// The cluster's shared secret (32 bytes or more, mode 0600, the same
    /// file on every node): only daemons holding it are nodes. Make one
    /// with `head -c 32 /dev/urandom > FILE && chmod 600 FILE`.
    #[arg(
        long,
        env = "DWELL_CLUSTER_SECRET_FILE",
        value_name = "FILE",
        requires = "cluster"
    )]
    pub cluster_secret_file: Option<PathBuf>,
    /// A label of this node that placement can select on (`zone=a`);
    /// repeat for more.
    #[arg(
        long = "node-label",
        env = "DWELL_NODE_LABELS",
        value_delimiter = ',',
        value_name = "KEY=VALUE",
        requires = "cluster"
    )]
    pub node_labels: Vec<String>,
    /// What this node offers to placement
    /// (`vcpus=16,memory=64G,disk=500G`; each part optional). Default:
    /// the host's CPUs and memory and the data dir's file system size.
    #[arg(
        long,
        value_name = "vcpus=N,memory=SIZE,disk=SIZE",
        requires = "cluster"
    )]
    pub node_capacity: Option<String>,
    /// How long this node's lease lasts without a heartbeat (heartbeats go
    /// every third of it). When it runs out the node freezes its running
    /// sandboxes; half a lease later the other nodes declare it lost and
    /// recover what has backups. Give every node of a cluster the same.
    #[arg(long, default_value = "15s", value_name = "DURATION")]
    pub lease: String,
}

/// A cluster membership as `serve` starts it.
pub struct Joining {
    pub url: String,
    /// The PostgreSQL server's CA certificates (PEM), for TLS.
    pub ca: Option<Vec<u8>>,
    pub options: ClusterOptions,
    pub secret_file: PathBuf,
    /// Where the node listener binds.
    pub listen: String,
}

impl ClusterFlags {
    /// The membership the flags ask for; None without --cluster.
    pub fn joining(&self, data_dir: &Path, object_store: Option<&str>) -> Result<Option<Joining>> {
        let Some(url) = &self.cluster else {
            return Ok(None);
        };
        let Some(advertise) = self.advertise.clone() else {
            bail!("--cluster needs --advertise HOST:PORT: where the other nodes reach this one");
        };
        let port = advertise
            .rsplit_once(':')
            .and_then(|(h, p)| (!h.is_empty()).then_some(p))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .with_context(|| {
                format!("--advertise {advertise:?} is not HOST:PORT (like 10.0.0.11:7071)")
            })?;
        let Some(secret_file) = self.cluster_secret_file.clone() else {
            bail!(
                "--cluster needs --cluster-secret-file FILE: the secret every node shares (make \
                 one with `head -c 32 /dev/urandom > FILE && chmod 600 FILE` and copy it to each \
                 node)"
            );
        };
        if object_store.is_none() {
            bail!(
                "--cluster needs --object-store s3://BUCKET/PREFIX shared by the nodes: \
                 sandboxes move between nodes and are backed up through it"
            );
        }
        let node = match &self.node_name {
            Some(n) => n.clone(),
            None => hostname()?,
        };
        check_name(&node)?;
        let lease = humantime::parse_duration(&self.lease)
            .with_context(|| format!("--lease {:?} is not a duration (like 15s)", self.lease))?;
        if lease < Duration::from_secs(3) || lease > Duration::from_secs(600) {
            bail!("--lease {}: give 3s to 10m", self.lease);
        }
        let mut labels = BTreeMap::new();
        for l in &self.node_labels {
            let Some((k, v)) = l.split_once('=') else {
                bail!("--node-label {l:?} is not KEY=VALUE");
            };
            if k.is_empty() {
                bail!("--node-label {l:?} has an empty key");
            }
            labels.insert(k.to_string(), v.to_string());
        }
        let listen = self
            .node_listen
            .clone()
            .unwrap_or_else(|| format!("0.0.0.0:{port}"));
        let ca = match &self.cluster_ca {
            Some(p) => {
                let meta = std::fs::metadata(p)
                    .with_context(|| format!("--cluster-ca {}", p.display()))?;
                if !meta.is_file() || meta.len() > 1 << 20 {
                    bail!(
                        "--cluster-ca {}: give a PEM file of CA certificates (at most 1 MiB)",
                        p.display()
                    );
                }
                Some(std::fs::read(p).with_context(|| format!("--cluster-ca {}", p.display()))?)
            }
            None => None,
        };
        Ok(Some(Joining {
            url: url.clone(),
            ca,
            options: ClusterOptions {
                node,
                advertise,
                labels,
                capacity: capacity(self.node_capacity.as_deref(), data_dir)?,
                lease,
                instance: instance_id(data_dir)?,
            },
            secret_file,
            listen,
        }))
    }
}

/// The id of this data dir's daemon (`<data-dir>/node-instance`, made
/// once): what tells a restart of this node from another daemon given the
/// same --node-name.
fn instance_id(data_dir: &Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let p = data_dir.join("node-instance");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim();
        if s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(s.to_string());
        }
    }
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("cannot make a node instance id: {e}"))?;
    let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let tmp = data_dir.join("node-instance.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(id.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))?;
    Ok(id)
}

/// A node name: 1-63 of `a-z 0-9 . _ -`, starting with a letter or digit.
fn check_name(n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 63
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if !ok {
        bail!("node name {n:?}: use 1-63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (--node-name)");
    }
    Ok(())
}

fn hostname() -> Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the host name; give --node-name")?;
    Ok(h.trim().to_ascii_lowercase())
}

/// `--node-capacity`, each part defaulting to what the host has.
fn capacity(flag: Option<&str>, data_dir: &Path) -> Result<Capacity> {
    let host = dwell_control::model::HostLimits::detect();
    let disk = nix_statvfs_size(data_dir).unwrap_or(0);
    let mut c = Capacity {
        vcpus: host.cpus,
        memory: host.memory_bytes,
        disk,
    };
    for part in flag.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("--node-capacity part {part:?} is not KEY=VALUE (vcpus=16,memory=64G,disk=500G)");
        };
        match k {
            "vcpus" => {
                c.vcpus = v
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n > 0.0)
                    .with_context(|| format!("--node-capacity vcpus={v}: give a positive number"))?
            }
            "memory" => {
                c.memory = dwell_control::size::parse_size(v)
                    .map_err(|e| anyhow::anyhow!("--node-capacity memory={v}: {e}"))?
            }
            "disk" => {
                c.disk = dwell_control::size::parse_size(v)
                    .map_err(|e| anyhow::anyhow!("--node-capacity disk={v}: {e}"))?
            }
            other => bail!("--node-capacity: unknown part {other:?} (vcpus, memory, disk)"),
        }
    }
    Ok(c)
}

/// The size of the file system holding `p`.
fn nix_statvfs_size(p: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed struct for the kernel to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_blocks as u64 * s.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> ClusterFlags {
        ClusterFlags {
            cluster: Some("postgres://dwell@db/dwell".into()),
            node_name: Some("n1".into()),
            advertise: Some("10.0.0.11:7071".into()),
            cluster_secret_file: Some("/etc/dwell/cluster.key".into()),
            lease: "15s".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_cluster_needs_its_pieces_and_says_which() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let j = flags().joining(&dir, Some("s3://b/p")).unwrap().unwrap();
        // The instance id is made once and kept.
        assert_eq!(j.options.instance.len(), 32);
        let again = flags().joining(&dir, Some("s3://b/p")).unwrap().unwrap();
        assert_eq!(again.options.instance, j.options.instance);
        assert_eq!(j.listen, "0.0.0.0:7071");
        assert_eq!(j.options.node, "n1");
        let e = flags().joining(&dir, None).err().unwrap().to_string();
        assert!(e.contains("--object-store"), "{e}");
        let mut f = flags();
        f.advertise = Some("10.0.0.11".into());
        let e = f.joining(&dir, Some("s3://b")).err().unwrap().to_string();
        assert!(e.contains("HOST:PORT"), "{e}");
        let mut f = flags();
        f.cluster_secret_file = None;
        let e = f.joining(&dir, Some("s3://b")).err().unwrap().to_string();
        assert!(e.contains("head -c 32"), "{e}");
        let mut f = flags();
        f.node_name = Some("N 1".into());
        assert!(f.joining(&dir, Some("s3://b")).is_err());
        assert!(ClusterFlags::default()
            .joining(&dir, None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn capacity_parts_override_the_host() {
        let c = capacity(Some("vcpus=8,memory=16G"), &std::env::temp_dir()).unwrap();
        assert_eq!((c.vcpus, c.memory), (8.0, 16 << 30));
        assert!(capacity(Some("gpus=1"), &std::env::temp_dir()).is_err());
        assert!(capacity(Some("vcpus=-1"), &std::env::temp_dir()).is_err());
    }
}
