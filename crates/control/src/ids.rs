//! Sandbox ids: 20 characters of `[a-z0-9]` from the OS's random source
//! (about 103 bits), so ids cannot be guessed and fit in host names of
//! cgroups and network interfaces.

const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// A fresh sandbox id.
pub fn new_id() -> String {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the OS random source is unavailable");
    bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect()
}

/// Whether `s` has the shape of an id (used to reject names that would
/// shadow one).
pub fn looks_like_id(s: &str) -> bool {
    s.len() == 20 && s.bytes().all(|b| ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_distinct_and_well_formed() {
        let a = super::new_id();
        let b = super::new_id();
        assert_ne!(a, b);
        assert!(super::looks_like_id(&a));
    }
}
