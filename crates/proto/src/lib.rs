//! dwell-proto (being written).
