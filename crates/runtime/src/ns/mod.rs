//! The namespace runtime (being written).
