//! dwell-control (being written).
