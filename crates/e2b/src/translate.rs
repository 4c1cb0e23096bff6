//! A Template SDK step list as a Dockerfile for `dwell build`.
//!
//! The SDK sends its template as a base (`fromImage`, or `fromTemplate`:
//! another of the tenant's templates) and steps of five kinds; each
//! becomes Dockerfile instructions, written so that no argument can break
//! out of its instruction (commands and paths in the JSON form, env values
//! quoted and escaped, no newlines where a line ends an instruction):
//!
//! | step | args | Dockerfile |
//! |---|---|---|
//! | `RUN` | command, [user] | `RUN ["/bin/sh","-c",command]`, between `USER user` and back |
//! | `COPY` | src, dest, [user], [mode] | `COPY [--chown=user] [--chmod=mode] ["files/HASH/src","dest"]` |
//! | `ENV` | key, value, ... | `ENV key="value" ...` |
//! | `WORKDIR` | path | `WORKDIR path` |
//! | `USER` | user | `USER user` |
//!
//! A COPY step's files were uploaded as a tar keyed by its `filesHash`;
//! the build unpacks that tar into `files/HASH/` of its context directory.
//! A source with a wildcard always copies into its destination as a
//! directory (as E2B's builder does), so a destination without a trailing
//! `/` gets one.
//!
//! The steps run as E2B's builder runs them: as the account `user` in
//! `/home/user` unless a step says otherwise. The `host-user` image (E2B's
//! base) and templates built by this translation have that account and
//! default already; an image from a registry gets it first ([`Setup`]:
//! `user`, its group, `/home/user`, passwordless sudo where the image has
//! sudo, then `USER user` and `WORKDIR /home/user`, labelled as the base
//! step). The built-in `host` image keeps root.
//! The start and ready commands are not part of the image: they are kept
//! with the build and run when a sandbox is created from it.

use crate::template_wire::{BuildStart, Step};

/// E2B's name of the base image step in logs and errors.
pub const BASE_STEP: &str = "base";
/// E2B's name of the step after the user's steps.
pub const FINALIZE_STEP: &str = "finalize";

/// The most steps a template may have.
pub const MAX_STEPS: usize = 1000;
/// The longest argument of a step (a command, a path, an env value).
pub const MAX_ARG: usize = 64 * 1024;

/// What a template builds from.
#[derive(Debug, Clone, PartialEq)]
pub enum Base {
    /// An image reference (`host` for E2B's own base image).
    Image(String),
    /// Another template of the same tenant (`name` or `name:tag`).
    Template(String),
}

/// The account E2B's builder runs steps as and leaves as the default.
pub const E2B_USER: &str = "user";

/// How the base is prepared before the user's steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    /// The user the base image runs commands as (its config's USER; root
    /// when it names none).
    pub user: String,
    /// Add the account [`E2B_USER`] and make it the default (images that
    /// do not come from this translation or `host-user`).
    pub provision: bool,
}

impl Setup {
    /// The setup of a base: `host-user` has the account as its default,
    /// `host` keeps root, a registry image is provisioned, a template's
    /// image keeps its config's `user` (`None`: root).
    pub fn for_base(base_image: &str, config_user: Option<&str>, from_template: bool) -> Setup {
        let user = config_user
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .unwrap_or("root")
            .to_string();
        if base_image == dwell_storage::HOST_USER_IMAGE {
            return Setup {
                user: E2B_USER.to_string(),
                provision: false,
            };
        }
        Setup {
            user,
            provision: !from_template && !dwell_storage::is_builtin(base_image),
        }
    }
}

/// Adds the account `user` (the first id from 1000 that neither
/// `/etc/passwd` nor `/etc/group` uses, bash when the image has it, a
/// locked password) and its group, `/home/user` owned by it and, where the
/// image has `/etc/sudoers.d`, passwordless sudo; an existing `user` is
/// kept. Shell builtins and `mkdir` only (`chown`/`chmod` where the image
/// has them), so that minimal images take it too.
const PROVISION: &str = r#"set -e
mkdir -p /etc /home/user
ids=" "; uu=; ug=; gg=
if [ -f /etc/passwd ]; then
  while IFS=: read -r n _ u g _; do
    ids="$ids$u "
    if [ "$n" = user ]; then uu=$u; ug=$g; fi
  done < /etc/passwd
fi
if [ -f /etc/group ]; then
  while IFS=: read -r n _ g _; do
    ids="$ids$g "
    if [ "$n" = user ]; then gg=$g; fi
  done < /etc/group
fi
if [ -z "$uu" ]; then
  uu=1000
  while case "$ids" in *" $uu "*) true ;; *) false ;; esac; do uu=$((uu + 1)); done
  if [ -z "$gg" ]; then gg=$uu; echo "user:x:$gg:" >> /etc/group; fi
  ug=$gg
  sh=/bin/sh; if [ -x /bin/bash ]; then sh=/bin/bash; fi
  echo "user:x:$uu:$ug::/home/user:$sh" >> /etc/passwd
  if [ -f /etc/shadow ]; then echo 'user:*:19000:0:99999:7:::' >> /etc/shadow; fi
fi
if command -v chown >/dev/null 2>&1; then chown "$uu:$ug" /home/user; fi
if [ -d /etc/sudoers.d ]; then
  echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/user
  if command -v chmod >/dev/null 2>&1; then chmod 0440 /etc/sudoers.d/user; fi
fi"#;

/// A step list ready for the build.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub dockerfile: String,
    /// For each Dockerfile instruction, the E2B step it comes from (the
    /// FROM is `base`; the user's steps count from 1).
    pub step_of: Vec<String>,
    /// The files hashes whose uploads go into the context, in step order
    /// (each once).
    pub files: Vec<String>,
    /// Skip the build cache (`force` on the template or any step).
    pub no_cache: bool,
    pub start_cmd: Option<String>,
    pub ready_cmd: Option<String>,
    /// RUN instructions with a user of their own (`run_cmd(user=)`), by
    /// their 1-based Dockerfile index (FROM is 1): the command and user, to
    /// word a failure as E2B does.
    pub run_users: std::collections::BTreeMap<usize, (String, String)>,
}

/// The base of a step list; `e2bdev/base` (the SDK's default) and the
/// template `base` are dwell's built-in `host-user` image.
pub fn base_of(start: &BuildStart) -> Result<Base, String> {
    if start
        .from_image_registry
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err("registry credentials in the template (from_image with username/password, from_aws_registry, from_gcp_registry) are not taken by dwell: the server pulls with its own registry logins; ask its admin to log in to that registry and use from_image(IMAGE) without credentials".into());
    }
    match (
        start.from_image.as_deref().filter(|s| !s.is_empty()),
        start.from_template.as_deref().filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            Err("the template names both fromImage and fromTemplate; give one base".into())
        }
        (None, None) => Err(
            "the template has no base: start it with from_image(IMAGE) or from_template(NAME)"
                .into(),
        ),
        (Some(image), None) => {
            check_line("fromImage", image)?;
            if image.chars().any(|c| c.is_whitespace() || c == '\\') {
                return Err(format!(
                    "fromImage {image:?} is not an image reference (it has white space or \\)"
                ));
            }
            let bare = image.strip_prefix("docker.io/").unwrap_or(image);
            Ok(Base::Image(
                if matches!(bare, "e2bdev/base" | "e2bdev/base:latest") {
                    dwell_storage::HOST_USER_IMAGE.to_string()
                } else {
                    image.to_string()
                },
            ))
        }
        (None, Some(t)) => {
            check_line("fromTemplate", t)?;
            if matches!(t, "base" | "base:latest" | "base:default") {
                return Ok(Base::Image(dwell_storage::HOST_USER_IMAGE.to_string()));
            }
            Ok(Base::Template(t.to_string()))
        }
    }
}

/// Translate `start` into a Dockerfile on `base_image` (the resolved base:
/// an image reference the build can use in FROM), prepared as `setup` says.
pub fn plan(start: &BuildStart, base_image: &str, setup: &Setup) -> Result<Plan, String> {
    if start.steps.len() > MAX_STEPS {
        return Err(format!(
            "the template has {} steps; dwell takes at most {MAX_STEPS}: join run_cmd calls (run_cmd takes a list of commands)",
            start.steps.len()
        ));
    }
    check_line("fromImage", base_image)?;
    let mut p = Plan {
        dockerfile: format!("FROM {base_image}\n"),
        step_of: vec![BASE_STEP.to_string()],
        files: Vec::new(),
        no_cache: start.force,
        start_cmd: None,
        ready_cmd: None,
        run_users: Default::default(),
    };
    if setup.provision {
        for line in [
            "USER root".to_string(),
            format!("RUN {}", json_array(&["/bin/sh", "-c", PROVISION])),
            format!("USER {E2B_USER}"),
            format!("WORKDIR /home/{E2B_USER}"),
        ] {
            p.dockerfile.push_str(&line);
            p.dockerfile.push('\n');
            p.step_of.push(BASE_STEP.to_string());
        }
    }
    // The user the steps run as (RUN steps with their own user switch
    // back to it): the base's, until a USER step sets another.
    let mut run_users = std::collections::BTreeMap::new();
    let mut user: String = if setup.provision {
        E2B_USER.to_string()
    } else {
        setup.user.clone()
    };
    for (i, step) in start.steps.iter().enumerate() {
        let n = i + 1;
        let label = n.to_string();
        let bad = |why: String| format!("step {n} ({}): {why}", step.kind);
        for a in &step.args {
            if a.len() > MAX_ARG {
                return Err(bad(format!(
                    "an argument is {} bytes; dwell takes at most {MAX_ARG}",
                    a.len()
                )));
            }
        }
        p.no_cache |= step.force;
        let before = p.step_of.len();
        let mut emit = |line: String| {
            p.dockerfile.push_str(&line);
            p.dockerfile.push('\n');
            p.step_of.push(label.clone());
        };
        match step.kind.as_str() {
            "RUN" => {
                let (cmd, as_user) = match step.args.as_slice() {
                    [cmd] => (cmd, None),
                    [cmd, u] if u.is_empty() => (cmd, None),
                    [cmd, u] => (cmd, Some(u)),
                    _ => return Err(bad(usage(step))),
                };
                if cmd.trim().is_empty() {
                    return Err(bad("the command is empty".into()));
                }
                if let Some(u) = as_user {
                    check_user(u).map_err(bad)?;
                    emit(format!("USER {u}"));
                }
                emit(format!("RUN {}", json_array(&["/bin/sh", "-c", cmd])));
                if let Some(u) = as_user {
                    // After FROM and the steps so far: this step's USER, then the RUN.
                    run_users.insert(before + 2, (cmd.to_string(), u.to_string()));
                }
                if as_user.is_some() {
                    emit(format!("USER {user}"));
                }
            }
            "COPY" => {
                let (src, dest, owner, mode) = match step.args.as_slice() {
                    [s, d] => (s, d, "", ""),
                    [s, d, u] => (s, d, u.as_str(), ""),
                    [s, d, u, m] => (s, d, u.as_str(), m.as_str()),
                    _ => return Err(bad(usage(step))),
                };
                let hash = step.files_hash.as_deref().ok_or_else(|| {
                    bad("it has no filesHash (the SDK sends the hash of the files it uploads)".into())
                })?;
                check_hash(hash).map_err(bad)?;
                let src = check_src(src).map_err(bad)?;
                if dest.is_empty() {
                    return Err(bad("the destination is empty".into()));
                }
                check_line("the destination", dest).map_err(bad)?;
                let mut line = "COPY".to_string();
                if !owner.is_empty() {
                    check_user(owner).map_err(bad)?;
                    line.push_str(&format!(" --chown={owner}"));
                }
                if !mode.is_empty() {
                    if mode.len() > 4 || !mode.chars().all(|c| ('0'..='7').contains(&c)) {
                        return Err(bad(format!(
                            "mode {mode:?} is not an octal file mode like 0755"
                        )));
                    }
                    line.push_str(&format!(" --chmod={mode}"));
                }
                let from = if src.is_empty() {
                    format!("files/{hash}/")
                } else {
                    format!("files/{hash}/{src}")
                };
                // Wildcards copy into the destination as a directory.
                let dest = if src.contains(['*', '?', '[']) && !dest.ends_with('/') {
                    format!("{dest}/")
                } else {
                    dest.to_string()
                };
                line.push(' ');
                line.push_str(&json_array(&[&from, &dest]));
                emit(line);
                if !p.files.iter().any(|h| h == hash) {
                    p.files.push(hash.to_string());
                }
            }
            "ENV" => {
                if step.args.is_empty() || step.args.len() % 2 != 0 {
                    return Err(bad(usage(step)));
                }
                let mut line = "ENV".to_string();
                for kv in step.args.chunks(2) {
                    let (k, v) = (&kv[0], &kv[1]);
                    let valid = k
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        return Err(bad(format!("{k:?} is not an environment variable name (letters, digits and _, not starting with a digit)")));
                    }
                    check_line(&format!("the value of {k}"), v).map_err(bad)?;
                    line.push_str(&format!(" {k}=\"{}\"", escape_env(v)));
                }
                emit(line);
            }
            "WORKDIR" => {
                let [dir] = step.args.as_slice() else {
                    return Err(bad(usage(step)));
                };
                if dir.trim().is_empty() {
                    return Err(bad("the directory is empty".into()));
                }
                check_line("the directory", dir).map_err(bad)?;
                if dir.contains(['$', '\\']) || dir.trim() != dir {
                    return Err(bad(format!(
                        "the directory {dir:?} has $, \\ or surrounding white space; give a plain path"
                    )));
                }
                emit(format!("WORKDIR {dir}"));
            }
            "USER" => {
                let [u] = step.args.as_slice() else {
                    return Err(bad(usage(step)));
                };
                check_user(u).map_err(bad)?;
                emit(format!("USER {u}"));
                user = u.clone();
            }
            other => {
                return Err(format!(
                    "step {n} has type {other:?}; dwell builds COPY, ENV, RUN, WORKDIR and USER steps (what the Template SDK sends)"
                ))
            }
        }
    }
    for (what, cmd) in [
        ("startCmd", &start.start_cmd),
        ("readyCmd", &start.ready_cmd),
    ] {
        if let Some(c) = cmd {
            if c.len() > MAX_ARG {
                return Err(format!(
                    "{what} is {} bytes; dwell takes at most {MAX_ARG}",
                    c.len()
                ));
            }
        }
    }
    p.run_users = run_users;
    p.start_cmd = start.start_cmd.clone().filter(|c| !c.trim().is_empty());
    p.ready_cmd = start.ready_cmd.clone().filter(|c| !c.trim().is_empty());
    Ok(p)
}

/// What a step of this kind takes.
fn usage(step: &Step) -> String {
    let want = match step.kind.as_str() {
        "RUN" => "[command] or [command, user]",
        "COPY" => "[src, dest] with an optional user and mode",
        "ENV" => "[key, value, key, value, ...]",
        "WORKDIR" => "[path]",
        "USER" => "[user]",
        _ => "its arguments",
    };
    format!("it has {} arguments; it takes {want}", step.args.len())
}

/// A value that ends up within one Dockerfile line.
fn check_line(what: &str, v: &str) -> Result<(), String> {
    if v.contains(['\n', '\r', '\0']) {
        return Err(format!(
            "{what} has a line break or NUL; give it on one line"
        ));
    }
    Ok(())
}

/// A user or `user:group` (names or ids).
fn check_user(u: &str) -> Result<(), String> {
    let ok = !u.is_empty()
        && u.len() <= 64
        && u.split(':').count() <= 2
        && u.split(':').all(|part| {
            !part.is_empty()
                && !part.starts_with('-')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{u:?} is not a user (a name or id, optionally :group, of letters, digits, _ - .)"
        ))
    }
}

/// A files hash: lowercase hex SHA-256, as the SDK computes it.
pub fn check_hash(h: &str) -> Result<(), String> {
    if h.len() == 64
        && h.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        Ok(())
    } else {
        Err(format!(
            "files hash {h:?} is not a lowercase hex SHA-256 (64 characters)"
        ))
    }
}

/// A COPY source: relative to the template's file context, inside it.
/// Returns it without `./` and trailing `/`.
fn check_src(src: &str) -> Result<String, String> {
    check_line("the source", src)?;
    if src.starts_with('/') {
        return Err(format!(
            "the source {src:?} is absolute; give a path relative to the template's file context directory"
        ));
    }
    let mut parts = Vec::new();
    for part in src.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "the source {src:?} leaves the template's file context directory (..)"
                ))
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// `["a","b"]` with JSON string escapes.
fn json_array(items: &[&str]) -> String {
    serde_json::to_string(items).expect("strings serialize")
}

/// A value inside `"..."` of ENV, taken literally (no `$` expansion).
fn escape_env(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: &str, args: &[&str]) -> Step {
        Step {
            kind: kind.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn root() -> Setup {
        Setup {
            user: "root".into(),
            provision: false,
        }
    }

    #[test]
    fn setups_of_bases() {
        let s = Setup::for_base("host-user", None, false);
        assert_eq!((s.user.as_str(), s.provision), ("user", false));
        let s = Setup::for_base("host", Some("/root"), false);
        assert!(!s.provision);
        let s = Setup::for_base("python:3.12", None, false);
        assert_eq!((s.user.as_str(), s.provision), ("root", true));
        let s = Setup::for_base("dwell-e2b/x", Some("user"), true);
        assert_eq!((s.user.as_str(), s.provision), ("user", false));
    }

    #[test]
    fn a_registry_image_gets_the_account_and_steps_run_as_it() {
        let s = start(vec![
            step("RUN", &["apt-get update", "root"]),
            copy("folder/*", "folder", "", ""),
            copy("a?.txt", "dir/", "", ""),
        ]);
        let p = plan(
            &s,
            "ubuntu:22.04",
            &Setup::for_base("ubuntu:22.04", None, false),
        )
        .unwrap();
        let lines: Vec<&str> = p.dockerfile.lines().collect();
        assert_eq!(lines[0], "FROM ubuntu:22.04");
        assert_eq!(lines[1], "USER root");
        assert!(lines[2].starts_with("RUN [\"/bin/sh\",\"-c\",\"set -e"));
        assert!(lines[2].contains("/etc/sudoers.d/user"));
        assert_eq!(&lines[3..5], ["USER user", "WORKDIR /home/user"]);
        assert_eq!(
            &lines[5..],
            [
                "USER root",
                "RUN [\"/bin/sh\",\"-c\",\"apt-get update\"]",
                "USER user",
                &format!("COPY [\"files/{HASH}/folder/*\",\"folder/\"]"),
                &format!("COPY [\"files/{HASH}/a?.txt\",\"dir/\"]"),
            ]
        );
        assert_eq!(&p.step_of[..5], ["base"; 5]);
        // FROM, 4 setup lines, USER root, then the RUN as 7th instruction.
        assert_eq!(
            p.run_users.get(&7),
            Some(&("apt-get update".to_string(), "root".to_string()))
        );
        assert_eq!(lines[6], "RUN [\"/bin/sh\",\"-c\",\"apt-get update\"]");
        // host-user already has it: nothing is added, and a RUN as root
        // switches back to user.
        let p = plan(&s, "host-user", &Setup::for_base("host-user", None, false)).unwrap();
        assert!(p.dockerfile.starts_with(
            "FROM host-user\nUSER root\nRUN [\"/bin/sh\",\"-c\",\"apt-get update\"]\nUSER user\n"
        ));
    }

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn copy(src: &str, dest: &str, user: &str, mode: &str) -> Step {
        Step {
            files_hash: Some(HASH.into()),
            ..step("COPY", &[src, dest, user, mode])
        }
    }

    fn start(steps: Vec<Step>) -> BuildStart {
        BuildStart {
            from_image: Some("python:3.12".into()),
            steps,
            ..Default::default()
        }
    }

    #[test]
    fn every_step_kind_translates() {
        let s = BuildStart {
            start_cmd: Some("python -m http.server 8000".into()),
            ready_cmd: Some("true".into()),
            ..start(vec![
                step("RUN", &["echo \"hi\" > /x\nls"]),
                step("RUN", &["whoami", "nobody"]),
                copy("./app/", "/srv/app", "nobody:nogroup", "0755"),
                copy("a b.txt", "/srv/", "", ""),
                step("ENV", &["A", "1 2", "B", "$HOME \"q\" \\"]),
                step("WORKDIR", &["/srv/app"]),
                step("USER", &["nobody"]),
                step("RUN", &["id", "root"]),
            ])
        };
        let p = plan(&s, "python:3.12", &root()).unwrap();
        let want = format!(
            r#"FROM python:3.12
RUN ["/bin/sh","-c","echo \"hi\" > /x\nls"]
USER nobody
RUN ["/bin/sh","-c","whoami"]
USER root
COPY --chown=nobody:nogroup --chmod=0755 ["files/{HASH}/app","/srv/app"]
COPY ["files/{HASH}/a b.txt","/srv/"]
ENV A="1 2" B="\$HOME \"q\" \\"
WORKDIR /srv/app
USER nobody
USER root
RUN ["/bin/sh","-c","id"]
USER nobody
"#
        );
        assert_eq!(p.dockerfile, want);
        assert_eq!(
            p.step_of,
            ["base", "1", "2", "2", "2", "3", "4", "5", "6", "7", "8", "8", "8"]
        );
        assert_eq!(p.files, [HASH]);
        assert!(!p.no_cache);
        assert_eq!(p.start_cmd.as_deref(), Some("python -m http.server 8000"));
        assert_eq!(p.ready_cmd.as_deref(), Some("true"));
    }

    #[test]
    fn force_anywhere_skips_the_cache() {
        let mut s = start(vec![step("RUN", &["true"])]);
        s.steps[0].force = true;
        assert!(plan(&s, "x", &root()).unwrap().no_cache);
        let mut s = start(vec![]);
        s.force = true;
        assert!(plan(&s, "x", &root()).unwrap().no_cache);
    }

    #[test]
    fn bases() {
        let mut s = start(vec![]);
        assert_eq!(base_of(&s).unwrap(), Base::Image("python:3.12".into()));
        s.from_image = Some("e2bdev/base".into());
        assert_eq!(base_of(&s).unwrap(), Base::Image("host-user".into()));
        s.from_image = None;
        s.from_template = Some("base".into());
        assert_eq!(base_of(&s).unwrap(), Base::Image("host-user".into()));
        s.from_image = None;
        s.from_template = Some("other:v1".into());
        assert_eq!(base_of(&s).unwrap(), Base::Template("other:v1".into()));
        s.from_template = None;
        assert!(base_of(&s).unwrap_err().contains("no base"));
        s.from_image = Some("a\nRUN evil".into());
        assert!(base_of(&s).is_err());
        s.from_image = Some("priv/img".into());
        s.from_image_registry = Some(serde_json::json!({"type": "registry"}));
        assert!(base_of(&s).unwrap_err().contains("credentials"));
    }

    #[test]
    fn bad_steps_are_refused_with_the_step_named() {
        let cases: Vec<(Step, &str)> = vec![
            (step("ADD", &["x"]), "step 1 has type \"ADD\""),
            (step("RUN", &[]), "takes [command]"),
            (step("RUN", &["  "]), "empty"),
            (step("RUN", &["true", "bad user"]), "not a user"),
            (step("ENV", &["A"]), "takes [key, value"),
            (step("ENV", &["1A", "x"]), "not an environment variable"),
            (step("ENV", &["A", "x\nRUN evil"]), "line break"),
            (step("WORKDIR", &["/a\nRUN evil"]), "line break"),
            (step("WORKDIR", &["$HOME"]), "plain path"),
            (step("USER", &["root\nRUN evil"]), "not a user"),
            (step("COPY", &["a", "/b"]), "no filesHash"),
            (copy("../etc", "/b", "", ""), "leaves"),
            (copy("/etc", "/b", "", ""), "absolute"),
            (copy("a", "/b", "", "999"), "octal"),
            (copy("a", "/b\nRUN x", "", ""), "line break"),
            (
                Step {
                    files_hash: Some("../../x".into()),
                    ..step("COPY", &["a", "/b"])
                },
                "not a lowercase hex",
            ),
        ];
        for (st, want) in cases {
            let e = plan(&start(vec![st.clone()]), "x", &root()).unwrap_err();
            assert!(e.contains(want), "{st:?}: {e}");
            assert!(e.starts_with("step 1"), "{e}");
        }
        let many = start(vec![step("RUN", &["true"]); MAX_STEPS + 1]);
        assert!(plan(&many, "x", &root()).unwrap_err().contains("at most"));
    }
}
