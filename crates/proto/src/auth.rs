//! The per-sandbox agent key and the handshake proofs made with it.
//!
//! The control plane gives every sandbox a random 32-byte [`AgentKey`]; its
//! agent gets it at start, the daemon keeps it in the sandbox's config. In
//! the handshake each side sends a fresh nonce and proves the key over both
//! nonces with a keyed BLAKE3 MAC ([`proof`]), so a connection that reaches
//! another sandbox's agent (or anything else listening) fails closed. See
//! "Handshake" in PROTOCOL.md.

use std::fmt;

/// Bytes of a key, a nonce and a proof.
pub const LEN: usize = 32;

/// Environment variable that carries the key (hex) to a starting agent; the
/// agent removes it from its environment before it starts anything.
pub const KEY_ENV: &str = "DWELL_AGENT_KEY";

/// Which side a proof is made by: the two proofs of one handshake differ,
/// so one cannot be replayed as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Agent,
    Client,
}

/// A sandbox's agent key. Its `Debug` output does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentKey([u8; LEN]);

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentKey(..)")
    }
}

impl AgentKey {
    /// A new random key from the kernel's CSPRNG.
    pub fn generate() -> std::io::Result<AgentKey> {
        Ok(AgentKey(random()?))
    }

    /// Parses the 64 hex digits of [`AgentKey::to_hex`].
    pub fn from_hex(s: &str) -> Result<AgentKey, String> {
        decode_hex(s).map(AgentKey).ok_or_else(|| {
            format!(
                "an agent key is {} hex digits; got {} characters",
                LEN * 2,
                s.len()
            )
        })
    }

    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }

    /// The proof `side` sends for a handshake with these nonces.
    pub fn proof(
        &self,
        side: Side,
        client_nonce: &[u8; LEN],
        agent_nonce: &[u8; LEN],
    ) -> [u8; LEN] {
        let label: &[u8; 8] = match side {
            Side::Agent => b"dw-agent",
            Side::Client => b"dw-clien",
        };
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"dwell agent handshake v2\0");
        h.update(label);
        h.update(client_nonce);
        h.update(agent_nonce);
        *h.finalize().as_bytes()
    }

    /// Whether `proof_hex` is the proof `side` must send (compared in
    /// constant time).
    pub fn verify(
        &self,
        side: Side,
        client_nonce: &[u8; LEN],
        agent_nonce: &[u8; LEN],
        proof_hex: &str,
    ) -> bool {
        let Some(got) = decode_hex(proof_hex) else {
            return false;
        };
        blake3::Hash::from(got) == blake3::Hash::from(self.proof(side, client_nonce, agent_nonce))
    }
}

/// 32 random bytes from getrandom(2).
pub fn random() -> std::io::Result<[u8; LEN]> {
    let mut b = [0u8; LEN];
    let mut filled = 0;
    while filled < LEN {
        // SAFETY: writes at most LEN - filled bytes into b[filled..].
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), LEN - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(b)
}

/// Lower-case hex of `b`.
pub fn encode_hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// Exactly `2 * LEN` hex digits (either case) to bytes.
pub fn decode_hex(s: &str) -> Option<[u8; LEN]> {
    let s = s.as_bytes();
    if s.len() != LEN * 2 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; LEN];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let k = AgentKey::generate().unwrap();
        assert_eq!(AgentKey::from_hex(&k.to_hex()).unwrap(), k);
        assert!(AgentKey::from_hex("abc").is_err());
        assert!(AgentKey::from_hex(&"g".repeat(64)).is_err());
        assert!(!format!("{k:?}").contains(&k.to_hex()[..8]));
    }

    #[test]
    fn proofs_bind_key_side_and_nonces() {
        let (k, other) = (AgentKey::generate().unwrap(), AgentKey::generate().unwrap());
        let (nc, na) = (random().unwrap(), random().unwrap());
        let p = encode_hex(&k.proof(Side::Agent, &nc, &na));
        assert!(k.verify(Side::Agent, &nc, &na, &p));
        assert!(!other.verify(Side::Agent, &nc, &na, &p));
        assert!(!k.verify(Side::Client, &nc, &na, &p));
        assert!(!k.verify(Side::Agent, &na, &nc, &p));
        assert!(!k.verify(Side::Agent, &nc, &na, "zz"));
    }
}
