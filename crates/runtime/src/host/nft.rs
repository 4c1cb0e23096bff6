//! Running an nftables script: `nft -f -` with the script on stdin, its
//! errors returned with what was being done. The one way the host plumbing
//! (NAT tables, egress sets, private-network port tables) changes nftables.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Run `script` through `nft -f -` (atomically: nft applies a script as one
/// transaction); `what` names the step in errors.
pub(crate) fn run_script(script: &str, what: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io {
            context: format!("{what}: running nft (install the nftables package)"),
            source: e,
        })?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .map_err(|e| Error::Io {
            context: format!("{what}: writing the nftables script"),
            source: e,
        })?;
    let out = child.wait_with_output().map_err(|e| Error::Io {
        context: format!("{what}: waiting for nft"),
        source: e,
    })?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{what}: nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
