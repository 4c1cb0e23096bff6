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
}

/// The base of a step list; `e2bdev/base` (the SDK's default) is dwell's
/// `host` image, as the `base` template is.
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
                    "host".to_string()
                } else {
                    image.to_string()
                },
            ))
        }
        (None, Some(t)) => {
            check_line("fromTemplate", t)?;
            Ok(Base::Template(t.to_string()))
        }
    }
}

/// Translate `start` into a Dockerfile on `base_image` (the resolved base:
/// an image reference the build can use in FROM).
pub fn plan(start: &BuildStart, base_image: &str) -> Result<Plan, String> {
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
    };
    // The user the steps run as, once a USER step set it (RUN steps with
    // their own user switch back to it; `root` before any USER step).
    let mut user: Option<String> = None;
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
                if as_user.is_some() {
                    emit(format!("USER {}", user.as_deref().unwrap_or("root")));
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
                line.push(' ');
                line.push_str(&json_array(&[&from, dest]));
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
                user = Some(u.clone());
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
        let p = plan(&s, "python:3.12").unwrap();
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
        assert!(plan(&s, "x").unwrap().no_cache);
        let mut s = start(vec![]);
        s.force = true;
        assert!(plan(&s, "x").unwrap().no_cache);
    }

    #[test]
    fn bases() {
        let mut s = start(vec![]);
        assert_eq!(base_of(&s).unwrap(), Base::Image("python:3.12".into()));
        s.from_image = Some("e2bdev/base".into());
        assert_eq!(base_of(&s).unwrap(), Base::Image("host".into()));
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
            let e = plan(&start(vec![st.clone()]), "x").unwrap_err();
            assert!(e.contains(want), "{st:?}: {e}");
            assert!(e.starts_with("step 1"), "{e}");
        }
        let many = start(vec![step("RUN", &["true"]); MAX_STEPS + 1]);
        assert!(plan(&many, "x").unwrap_err().contains("at most"));
    }
}
