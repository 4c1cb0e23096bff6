//! Host plumbing both runtimes share: thin system call wrappers ([`sys`]),
//! a sandbox's cgroups ([`cgroup`]), NAT networking and its block list
//! ([`network`], [`blocklist`]), tenant private networks ([`private_net`]), the overlays of its root filesystem and
//! other host mounts ([`mounts`], [`userxattr`]), where its files live
//! ([`layout`]) and bounded waits ([`wait`]). The calls that change the
//! host go through the [`Host`] trait ([`kernel`]), so tests can record
//! them instead. The namespace runtime
//! (`ns`) and the gVisor runtime (`gvisor`) are built on these; neither
//! borrows from the other.

pub mod blocklist;
pub mod cgroup;
pub mod egress;
pub mod kernel;
pub mod layout;
pub mod mounts;
pub mod network;
mod nft;
pub mod private_net;
#[cfg(test)]
pub mod recording;
pub mod sys;
pub mod userxattr;
pub mod wait;

pub use kernel::{Host, Kernel, Mount};
