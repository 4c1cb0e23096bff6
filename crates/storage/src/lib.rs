//! dwell-storage (being written).
