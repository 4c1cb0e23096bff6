//! (filled by the paths work of issue 11)
