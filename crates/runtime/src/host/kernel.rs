//! The seam between the runtimes' host-side sequences and the kernel: the
//! [`Host`] trait names each call that changes the host (mount, unmount,
//! kill, a pinned network namespace, a sandbox's NAT and private networks), [`Kernel`]
//! makes them for real, and tests give a recording double instead (see
//! `host::recording`), so the order of a start's mounts or a stop's
//! cleanup is checked without root.
//!
//! Calls that only read (`/proc`, `/sys/class/net`) and file operations in
//! the daemon's own state dir stay direct, except what decides a cleanup
//! ([`Host::mounts_below`], [`Host::has_veth`]), which the double answers
//! from what it was asked to do.

use std::io;
use std::path::{Path, PathBuf};

use super::network::{self, NetInfo, Netns};
use super::sys;
use crate::Result;

/// One `mount(2)`: what, where, which filesystem, flags and options.
#[derive(Debug, Clone, Copy)]
pub struct Mount<'a> {
    pub source: Option<&'a Path>,
    pub target: &'a Path,
    pub fstype: Option<&'a str>,
    pub flags: libc::c_ulong,
    pub data: Option<&'a str>,
}

/// The kernel calls a runtime's host-side sequences make.
pub trait Host: Send + Sync + std::fmt::Debug {
    /// `mount(2)`.
    fn mount(&self, m: &Mount<'_>) -> io::Result<()>;
    /// `umount2(2)` of `target` with `flags` (`MNT_DETACH`, ...).
    fn unmount(&self, target: &Path, flags: libc::c_int) -> io::Result<()>;
    /// Mount points at or below `dir` in this mount namespace, deepest
    /// first.
    fn mounts_below(&self, dir: &Path) -> Vec<PathBuf>;
    /// `kill(2)`.
    fn kill(&self, pid: i32, signal: libc::c_int) -> io::Result<()>;
    /// A new network namespace with loopback up, kept alive by a bind
    /// mount on the (existing, empty) file `path`.
    fn pin_netns(&self, path: &Path) -> io::Result<()>;
    /// Sandbox `id`'s NAT network in `netns` (see [`network::setup`]).
    fn net_setup(
        &self,
        id: &str,
        netns: Netns<'_>,
        pool: &str,
        deny: &[String],
        state_dir: &Path,
    ) -> Result<NetInfo>;
    /// Remove sandbox `id`'s veth and nftables table (see
    /// [`network::teardown`]). Best effort.
    fn net_teardown(&self, id: &str);
    /// Whether the host side of sandbox `id`'s veth pair exists.
    fn has_veth(&self, id: &str) -> bool;
    /// Put sandbox `id` on its private networks (see
    /// [`super::private_net::attach`]).
    fn private_setup(
        &self,
        id: &str,
        netns: Netns<'_>,
        nets: &[crate::PrivateNet],
        state_dir: &Path,
    ) -> Result<()>;
    /// Remove what [`Host::private_setup`] made for the sandbox whose state
    /// dir is `state_dir` (see [`super::private_net::teardown`]). Best
    /// effort; free when there is nothing.
    fn private_teardown(&self, state_dir: &Path);
}

/// The real host: each call goes to the kernel (or to `ip`/`nft`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Kernel;

impl Host for Kernel {
    fn mount(&self, m: &Mount<'_>) -> io::Result<()> {
        sys::mount(m.source, m.target, m.fstype, m.flags, m.data)
    }

    fn unmount(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        sys::umount2(target, flags)
    }

    fn mounts_below(&self, dir: &Path) -> Vec<PathBuf> {
        super::mounts::mounts_below(dir)
    }

    fn kill(&self, pid: i32, signal: libc::c_int) -> io::Result<()> {
        sys::kill(pid, signal)
    }

    fn pin_netns(&self, path: &Path) -> io::Result<()> {
        let target = path.to_path_buf();
        std::thread::spawn(move || -> io::Result<()> {
            // Only this thread moves to the new namespace (it is not
            // shared with the process's other threads); it ends right
            // after, and the mount keeps the namespace.
            sys::unshare(libc::CLONE_NEWNET)?;
            // runsc's network stack takes only the interfaces that are
            // up: without this a gVisor sandbox had no loopback.
            super::network::loopback_up().map_err(io::Error::other)?;
            sys::mount(
                Some(Path::new("/proc/thread-self/ns/net")),
                &target,
                None,
                libc::MS_BIND,
                None,
            )
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the thread panicked")))
    }

    fn net_setup(
        &self,
        id: &str,
        netns: Netns<'_>,
        pool: &str,
        deny: &[String],
        state_dir: &Path,
    ) -> Result<NetInfo> {
        network::setup(id, netns, pool, deny, state_dir)
    }

    fn net_teardown(&self, id: &str) {
        network::teardown(id)
    }

    fn has_veth(&self, id: &str) -> bool {
        super::network::link_exists(&super::layout::host_veth(id))
    }

    fn private_setup(
        &self,
        id: &str,
        netns: Netns<'_>,
        nets: &[crate::PrivateNet],
        state_dir: &Path,
    ) -> Result<()> {
        super::private_net::attach(id, netns, nets, state_dir)
    }

    fn private_teardown(&self, state_dir: &Path) {
        super::private_net::teardown(state_dir)
    }
}
