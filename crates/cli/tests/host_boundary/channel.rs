//! (filled by the channel work of issue 11)
