//! (filled by the host_files work of issue 11)
