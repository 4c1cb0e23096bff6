//! dwell-store (being written).
