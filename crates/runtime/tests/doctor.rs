//! `doctor()` describes this host.

#[test]
fn doctor_reports_the_host() {
    let checks = dwell_runtime::ns::doctor();
    let get = |n: &str| {
        checks
            .iter()
            .find(|c| c.name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert!(get("cgroups").ok, "{:?}", get("cgroups"));
    assert!(get("overlayfs").ok);
    assert!(get("seccomp").ok);
    assert!(get("pid namespace").ok);
    // NAT is reported either way, with a fix when it is unavailable.
    let nat = get("nat networking");
    assert!(nat.ok || nat.detail.contains("ip_forward") || nat.detail.contains("install"));
}
