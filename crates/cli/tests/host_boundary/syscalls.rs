//! (filled by the syscalls work of issue 11)
