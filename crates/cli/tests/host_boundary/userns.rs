//! (filled by the userns work of issue 11)
