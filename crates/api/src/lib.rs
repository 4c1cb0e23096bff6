//! dwell-api (being written).
