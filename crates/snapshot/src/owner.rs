//! Who holds a lease, precisely enough that another process on the same machine can prove the
//! holder dead without waiting out the lease's time-to-live.
//!
//! A lease records its process as boot id, pid and time namespaces, uid, pid and start time. A
//! reader that shares the boot and both namespaces looks the pid up in `/proc`: no such process, a
//! zombie, or a process that started at another time (the pid was reused) means the holder is gone
//! and will never refresh or release its lease. From another machine, other namespaces, or for a
//! lease written without an owner (older writers), nothing is provable and the time-to-live
//! decides. So is it when this process's `/proc` belongs to another pid namespace (`/proc/self`
//! is not our pid), and for another user's process when we are not root (`hidepid` may hide it).
//! Machines cloned from one image keep one boot id: clones that run at once must not share a
//! store.
//!
//! Without this, a daemon killed during a garbage collection blocked every snapshot writer on the
//! store for the whole time-to-live (10 minutes by default), including the restarted daemon's own
//! recovery of an interrupted archive.

use serde::{Deserialize, Serialize};

/// A lease holder's process.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    /// `/proc/sys/kernel/random/boot_id`: the same on one machine until it reboots.
    pub boot_id: String,
    /// The pid namespace, as `readlink /proc/self/ns/pid` shows it (`pid:[4026531836]`).
    pub pid_ns: String,
    /// The time namespace (`/proc/self/ns/time`; empty on kernels without them): start times
    /// read through another one are shifted.
    pub time_ns: String,
    /// The process's effective uid (the owner of `/proc/<pid>`).
    pub uid: u32,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot.
    pub start_ticks: u64,
}

/// Where a process stands, as `/proc/<pid>/stat` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proc {
    /// No such process.
    Missing,
    /// Dead, waiting to be reaped.
    Zombie,
    /// Alive, started at these clock ticks after boot.
    Alive(u64),
    /// `/proc` could not be read: nothing can be told.
    Unknown,
}

/// This machine and pid namespace, as an [`Owner`] names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Here {
    pub boot_id: String,
    pub pid_ns: String,
    pub time_ns: String,
    /// Our effective uid.
    pub uid: u32,
}

impl Here {
    /// The current boot and namespaces; `None` without a `/proc` of our own pid namespace.
    pub fn current() -> Option<Here> {
        // A /proc mounted for another pid namespace shows other processes under our pids.
        let me = std::fs::read_link("/proc/self").ok()?;
        if me.to_str()? != std::process::id().to_string() {
            return None;
        }
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let pid_ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
        let time_ns = std::fs::read_link("/proc/self/ns/time")
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        Some(Here {
            boot_id: boot_id.trim().to_string(),
            pid_ns: pid_ns.to_string_lossy().into_owned(),
            time_ns,
            // SAFETY: geteuid has no arguments and cannot fail.
            uid: unsafe { libc::geteuid() },
        })
    }
}

impl Owner {
    /// The calling process; `None` without a readable `/proc` (the lease then has no owner and
    /// only its time-to-live can end it).
    pub fn me() -> Option<Owner> {
        Owner::of(std::process::id())
    }

    /// Process `pid` on this machine, if it is alive.
    pub fn of(pid: u32) -> Option<Owner> {
        let here = Here::current()?;
        let Proc::Alive(start_ticks) = probe(pid) else {
            return None;
        };
        let uid =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(format!("/proc/{pid}")).ok()?);
        Some(Owner {
            boot_id: here.boot_id,
            pid_ns: here.pid_ns,
            time_ns: here.time_ns,
            uid,
            pid,
            start_ticks,
        })
    }

    /// Whether this holder has provably exited (see the module docs).
    pub fn is_gone(&self) -> bool {
        match Here::current() {
            Some(here) => self.is_gone_given(&here, probe),
            None => false,
        }
    }

    /// [`Owner::is_gone`] with the machine and the process lookup given.
    pub fn is_gone_given(&self, here: &Here, probe: impl FnOnce(u32) -> Proc) -> bool {
        if self.boot_id != here.boot_id
            || self.pid_ns != here.pid_ns
            || self.time_ns != here.time_ns
        {
            return false;
        }
        match probe(self.pid) {
            // Missing may mean hidden (`hidepid`), unless we see every process.
            Proc::Missing => here.uid == 0 || here.uid == self.uid,
            Proc::Zombie => true,
            Proc::Alive(start) => start != self.start_ticks,
            Proc::Unknown => false,
        }
    }
}

/// Looks `pid` up in `/proc`.
pub(crate) fn probe(pid: u32) -> Proc {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Proc::Missing,
        // ESRCH: the process went between the lookup and the read.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Proc::Missing,
        Err(_) => return Proc::Unknown,
    };
    match parse_stat(&stat) {
        // A thread-group leader that exited while other threads run shows as a zombie too.
        Proc::Zombie if live_threads(pid) != Some(1) => Proc::Unknown,
        p => p,
    }
}

/// How many threads `/proc/<pid>/task` lists (the exited leader's included).
fn live_threads(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.count())
}

/// The state and start time in the text of a `/proc/<pid>/stat`.
fn parse_stat(stat: &str) -> Proc {
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so the fields start after
    // the last ')'.
    let Some(close) = stat.rfind(')') else {
        return Proc::Unknown;
    };
    let mut fields = stat[close + 1..].split_whitespace();
    match fields.next() {
        Some("Z" | "X" | "x") => return Proc::Zombie,
        Some(_) => {}
        None => return Proc::Unknown,
    }
    // The state is field 3, the start time field 22.
    match fields.nth(18).and_then(|f| f.parse().ok()) {
        Some(t) => Proc::Alive(t),
        None => Proc::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(boot: &str, ns: &str, start: u64) -> Owner {
        Owner {
            boot_id: boot.into(),
            pid_ns: ns.into(),
            time_ns: "time:[1]".into(),
            uid: 1000,
            pid: 4242,
            start_ticks: start,
        }
    }

    fn here() -> Here {
        Here {
            boot_id: "b1".into(),
            pid_ns: "pid:[1]".into(),
            time_ns: "time:[1]".into(),
            uid: 0,
        }
    }

    #[test]
    fn only_the_same_boot_and_namespaces_can_prove_a_holder_gone() {
        let missing = |_| Proc::Missing;
        assert!(owner("b1", "pid:[1]", 7).is_gone_given(&here(), missing));
        assert!(!owner("b2", "pid:[1]", 7).is_gone_given(&here(), missing));
        assert!(!owner("b1", "pid:[2]", 7).is_gone_given(&here(), missing));
        let mut other_time = owner("b1", "pid:[1]", 7);
        other_time.time_ns = "time:[2]".into();
        assert!(!other_time.is_gone_given(&here(), missing));
    }

    #[test]
    fn a_missing_process_of_another_user_proves_nothing_unless_we_are_root() {
        let o = owner("b1", "pid:[1]", 7);
        let user = |uid| Here { uid, ..here() };
        assert!(o.is_gone_given(&user(0), |_| Proc::Missing));
        assert!(o.is_gone_given(&user(1000), |_| Proc::Missing));
        assert!(!o.is_gone_given(&user(1001), |_| Proc::Missing));
        assert!(o.is_gone_given(&user(1001), |_| Proc::Zombie));
    }

    #[test]
    fn a_reused_pid_or_a_zombie_is_gone_and_unknown_is_not() {
        let o = owner("b1", "pid:[1]", 7);
        assert!(!o.is_gone_given(&here(), |_| Proc::Alive(7)));
        assert!(o.is_gone_given(&here(), |_| Proc::Alive(8)));
        assert!(o.is_gone_given(&here(), |_| Proc::Zombie));
        assert!(!o.is_gone_given(&here(), |_| Proc::Unknown));
    }

    #[test]
    fn stat_lines_parse_past_odd_command_names() {
        let tail = "1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 100000 200";
        assert_eq!(
            parse_stat(&format!("12 (a) b (c)) S 1 {tail}")),
            Proc::Alive(987654)
        );
        assert_eq!(parse_stat(&format!("12 (x) Z 1 {tail}")), Proc::Zombie);
        assert_eq!(parse_stat("12 (x) S 1"), Proc::Unknown);
        assert_eq!(parse_stat("garbage"), Proc::Unknown);
    }

    #[test]
    fn a_real_process_is_alive_until_it_is_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let o = Owner::of(child.id()).expect("a running child is alive");
        assert!(!o.is_gone());
        child.kill().unwrap();
        // Killed but not reaped: a zombie, already gone.
        let t0 = std::time::Instant::now();
        while !o.is_gone() {
            assert!(t0.elapsed().as_secs() < 10, "the killed child never died");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert!(o.is_gone());
        assert!(Owner::me().is_some_and(|me| !me.is_gone()));
    }
}
