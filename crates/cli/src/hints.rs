//! What a CLI user can do about an API error, worded from the error's code
//! and facts (`dwell_contract::ErrorDetail`). The daemon says what went
//! wrong; the commands to run about it are the CLI's to name, so they are
//! worded here and nowhere else.

use std::collections::BTreeMap;

use dwell_contract::error::{code, fact};

/// The advice for an error, or `None` when the CLI has nothing to add.
pub fn hint(code: &str, facts: &BTreeMap<String, String>) -> Option<String> {
    let get = |name: &str| facts.get(name).map(String::as_str);
    match code {
        code::CONFLICT => {
            let sandbox = get(fact::SANDBOX)?;
            match get(fact::STATE)? {
                _ if get(fact::ACTION) == Some("delete") => Some(format!(
                    "stop it first, or remove it anyway with `dwell rm -f {sandbox}`"
                )),
                "paused" | "hibernated" => Some(format!("resume it with `dwell resume {sandbox}`")),
                "stopped" | "archived" | "error" => {
                    Some(format!("start it with `dwell start {sandbox}`"))
                }
                _ => None,
            }
        }
        code::SANDBOX_PAUSED => {
            let sandbox = get(fact::SANDBOX)?;
            Some(format!(
                "run `dwell resume {sandbox}`, or set `dwell update {sandbox} --auto-resume` so it wakes on use"
            ))
        }
        code::QUOTA_EXCEEDED => {
            let tenant = get(fact::TENANT)?;
            let raise = match get(fact::RESOURCE) {
                Some(resource) => {
                    format!("`dwell tenant update {tenant} --max-{resource} ...`")
                }
                None => format!("`dwell tenant update {tenant} ...`"),
            };
            Some(format!(
                "free some (`dwell stop` or `dwell rm` sandboxes), or have an admin raise the quota with {raise} (it replaces all of the tenant's limits)"
            ))
        }
        code::NAME_TAKEN if get(fact::VOLUME).is_some() => {
            let name = get(fact::VOLUME)?;
            Some(format!(
                "pick another name, or remove the other volume with `dwell volume rm {name}`"
            ))
        }
        code::VOLUME_IN_USE => {
            let users = get(fact::SANDBOX)?.replace(',', " ");
            Some(format!(
                "remove the sandboxes that use it first with `dwell rm -f {users}` (the volume stays)"
            ))
        }
        code::NAME_TAKEN if get(fact::NETWORK).is_some() => {
            let name = get(fact::NETWORK)?;
            Some(format!(
                "pick another name, or remove the other network with `dwell network rm {name}`"
            ))
        }
        code::NAME_TAKEN => {
            let name = get(fact::NAME)?;
            Some(format!(
                "pick another --name, or remove the other sandbox with `dwell rm {name}`"
            ))
        }
        code::NOT_FOUND => {
            if get(fact::SNAPSHOT).is_some() {
                Some("list snapshots with `dwell snapshot ls`".into())
            } else if get(fact::NETWORK).is_some() {
                Some("list networks with `dwell network ls`".into())
            } else if get(fact::VOLUME).is_some() {
                Some("list volumes with `dwell volume ls`".into())
            } else if get(fact::TENANT).is_some() {
                Some("list tenants with `dwell tenant ls`".into())
            } else if get(fact::SANDBOX).is_some() {
                Some("list sandboxes with `dwell ls`".into())
            } else {
                None
            }
        }
        _ => None,
    }
}

/// `message`, followed by the hint for `code` and `facts` when there is
/// one the message does not already give.
pub fn with_hint(message: &str, code: &str, facts: &BTreeMap<String, String>) -> String {
    match hint(code, facts) {
        // A daemon from before errors carried facts words its own advice;
        // do not give the same command twice.
        Some(h) if !message.contains(command_of(&h)) => format!("{message}; {h}"),
        _ => message.to_string(),
    }
}

/// The first command quoted in a hint (between backticks), or the hint.
fn command_of(hint: &str) -> &str {
    hint.split('`').nth(1).unwrap_or(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_sandbox_that_does_not_wake_on_use_is_resumed_or_set_to() {
        let f = facts(&[("sandbox", "web"), ("state", "paused"), ("action", "exec")]);
        assert_eq!(
            hint("sandbox_paused", &f).as_deref(),
            Some("run `dwell resume web`, or set `dwell update web --auto-resume` so it wakes on use")
        );
        assert_eq!(hint("sandbox_paused", &facts(&[])), None);
    }

    #[test]
    fn a_paused_sandbox_is_resumed_and_a_stopped_one_started() {
        let paused = facts(&[("sandbox", "work"), ("state", "paused"), ("action", "exec")]);
        assert_eq!(
            hint("conflict", &paused).as_deref(),
            Some("resume it with `dwell resume work`")
        );
        let hibernated = facts(&[("sandbox", "w"), ("state", "hibernated")]);
        assert_eq!(
            hint("conflict", &hibernated).as_deref(),
            Some("resume it with `dwell resume w`")
        );
        for state in ["stopped", "archived", "error"] {
            let f = facts(&[("sandbox", "w"), ("state", state)]);
            assert_eq!(
                hint("conflict", &f).as_deref(),
                Some("start it with `dwell start w`"),
                "{state}"
            );
        }
        // Running, or no state given: nothing to advise.
        assert_eq!(
            hint(
                "conflict",
                &facts(&[("sandbox", "w"), ("state", "running")])
            ),
            None
        );
        assert_eq!(hint("conflict", &facts(&[("sandbox", "w")])), None);
        // A refused delete is forced, whatever the state.
        let f = facts(&[("sandbox", "w"), ("state", "running"), ("action", "delete")]);
        assert_eq!(
            hint("conflict", &f).as_deref(),
            Some("stop it first, or remove it anyway with `dwell rm -f w`")
        );
    }

    #[test]
    fn a_quota_names_the_tenant_update_flag() {
        let f = facts(&[
            ("tenant", "acme"),
            ("resource", "memory"),
            ("limit", "1073741824"),
            ("used", "0"),
            ("asked", "2147483648"),
        ]);
        let h = hint("quota_exceeded", &f).unwrap();
        assert!(
            h.contains("`dwell tenant update acme --max-memory ...`"),
            "{h}"
        );
        let h = hint("quota_exceeded", &facts(&[("tenant", "acme")])).unwrap();
        assert!(h.contains("`dwell tenant update acme ...`"), "{h}");
        assert_eq!(hint("quota_exceeded", &facts(&[])), None);
    }

    #[test]
    fn a_taken_name_asks_for_another() {
        let h = hint("name_taken", &facts(&[("name", "work")])).unwrap();
        assert!(h.contains("another --name"), "{h}");
        assert!(h.contains("`dwell rm work`"), "{h}");
    }

    #[test]
    fn not_found_lists_what_was_looked_for() {
        assert_eq!(
            hint("not_found", &facts(&[("sandbox", "x")])).as_deref(),
            Some("list sandboxes with `dwell ls`")
        );
        assert_eq!(
            hint("not_found", &facts(&[("snapshot", "s")])).as_deref(),
            Some("list snapshots with `dwell snapshot ls`")
        );
        assert_eq!(
            hint("not_found", &facts(&[("tenant", "acme")])).as_deref(),
            Some("list tenants with `dwell tenant ls`")
        );
        assert_eq!(
            hint("not_found", &facts(&[("network", "team")])).as_deref(),
            Some("list networks with `dwell network ls`")
        );
        assert_eq!(
            hint(
                "name_taken",
                &facts(&[("name", "team"), ("network", "team")])
            )
            .as_deref(),
            Some("pick another name, or remove the other network with `dwell network rm team`")
        );
        assert_eq!(
            hint("not_found", &facts(&[("volume", "pgdata")])).as_deref(),
            Some("list volumes with `dwell volume ls`")
        );
        assert_eq!(
            hint(
                "name_taken",
                &facts(&[("name", "pgdata"), ("volume", "pgdata")])
            )
            .as_deref(),
            Some("pick another name, or remove the other volume with `dwell volume rm pgdata`")
        );
        assert_eq!(
            hint(
                "volume_in_use",
                &facts(&[("volume", "pgdata"), ("sandbox", "db,reader")])
            )
            .as_deref(),
            Some(
                "remove the sandboxes that use it first with `dwell rm -f db reader` (the volume \
                 stays)"
            )
        );
        assert_eq!(hint("not_found", &facts(&[])), None);
        assert_eq!(hint("internal", &facts(&[("sandbox", "x")])), None);
    }

    #[test]
    fn the_hint_follows_the_message_once() {
        let f = facts(&[("sandbox", "work"), ("state", "paused")]);
        assert_eq!(
            with_hint("sandbox work is paused", "conflict", &f),
            "sandbox work is paused; resume it with `dwell resume work`"
        );
        // A message that already names the command keeps its own words.
        let old = "sandbox work is paused; resume it with `dwell resume work`";
        assert_eq!(with_hint(old, "conflict", &f), old);
        assert_eq!(with_hint("boom", "internal", &f), "boom");
    }
}
