//! Stand-alone boot process of the namespace runtime, for tests and for
//! running the runtime without the daemon: `dwell-ns-boot <state_dir>`.
//! The daemon calls the same [`dwell_runtime::ns::boot_main`] from its
//! hidden `dwell __ns-boot <state_dir>` subcommand.

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: dwell-ns-boot <state_dir>");
        std::process::exit(2);
    };
    std::process::exit(dwell_runtime::ns::boot_main(std::path::Path::new(&dir)));
}
