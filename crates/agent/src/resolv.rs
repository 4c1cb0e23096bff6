//! The sandbox's `/etc/resolv.conf`. A NAT sandbox resolves names through
//! the daemon's DNS resolver on its gateway address (it enforces the
//! egress policy's domain rules); the runtime hands that address to the
//! agent in [`DNS_ENV`], and the agent, as PID 1, writes it into
//! `/etc/resolv.conf` before it serves anything (replacing a symlink,
//! such as systemd-resolved's stub, by a file). The variable is removed
//! from the environment so no process inherits it.

use std::net::Ipv4Addr;

/// Set by the runtime (`dwell_runtime::DNS_ENV`, the same name).
pub const DNS_ENV: &str = "DWELL_DNS";

const PATH: &str = "/etc/resolv.conf";

/// Reads and removes [`DNS_ENV`] and writes `/etc/resolv.conf` when it
/// names an address. Call first thing in `main`, while the agent has a
/// single thread. A failure is reported, not fatal: the sandbox's DNS
/// packets reach the resolver whatever server the file names.
pub fn init_from_env() {
    let Some(v) = std::env::var_os(DNS_ENV) else {
        return;
    };
    std::env::remove_var(DNS_ENV);
    let Some(addr) = v.to_str().and_then(|s| s.trim().parse::<Ipv4Addr>().ok()) else {
        eprintln!("dwell-agent: {DNS_ENV} is not an IPv4 address; /etc/resolv.conf left as it is");
        return;
    };
    if let Err(e) = write(addr) {
        eprintln!("dwell-agent: writing {PATH}: {e}; DNS still goes to {addr}");
    }
}

/// The file's content for resolver `addr`.
pub fn content(addr: Ipv4Addr) -> String {
    format!(
        "# Written by dwell at each start: the sandbox's DNS resolver (it applies the\n\
         # sandbox's egress rules). DNS sent to any other server is redirected to it.\n\
         nameserver {addr}\n\
         options timeout:2 attempts:2\n"
    )
}

fn write(addr: Ipv4Addr) -> std::io::Result<()> {
    let tmp = "/etc/.resolv.conf.dwell";
    let _ = std::fs::remove_file(tmp);
    std::fs::write(tmp, content(addr))?;
    std::fs::rename(tmp, PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_resolver() {
        let c = content(Ipv4Addr::new(10, 200, 0, 1));
        assert!(c.lines().any(|l| l == "nameserver 10.200.0.1"), "{c}");
    }
}
