//! Dockerfile parsing: lines (with `\` continuations, comments, the
//! `# escape=` directive and RUN heredocs) into [`Instruction`]s.
//!
//! Words are not split or expanded here: the builder expands `$VAR`s with
//! the values in scope at each step ([`crate::expand`]), so each
//! instruction keeps its raw argument text. What is checked here is the
//! shape: a known instruction, the right number of arguments, JSON forms
//! that are JSON arrays of strings. Errors name the line (and column where
//! it helps).

use std::fmt;

/// A parse error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line of the instruction (its first line when continued).
    pub line: usize,
    /// 1-based column, when one position is at fault.
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(c) => write!(
                f,
                "Dockerfile line {}, column {}: {}",
                self.line, c, self.message
            ),
            None => write!(f, "Dockerfile line {}: {}", self.line, self.message),
        }
    }
}

impl std::error::Error for ParseError {}

/// Shell form (run by the stage's shell) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Shell(String),
    Exec(Vec<String>),
}

/// One instruction with its raw arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where it starts.
    pub line: usize,
    /// Upper-case keyword (`RUN`, `COPY`, ...).
    pub keyword: String,
    /// `--name=value` flags before the arguments (COPY, ADD, FROM,
    /// HEALTHCHECK), in order.
    pub flags: Vec<(String, String)>,
    /// The arguments after the flags, continuations joined, unexpanded.
    pub args: String,
    /// For RUN: the heredoc bodies that follow it (`<<EOF ... EOF`).
    pub heredocs: Vec<Heredoc>,
}

/// A heredoc after a RUN line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub word: String,
    /// The body with its terminator line excluded (leading tabs stripped
    /// for `<<-`).
    pub body: String,
}

impl Instruction {
    /// The text shown in progress (`RUN apt-get install ...`).
    pub fn text(&self) -> String {
        let mut s = self.keyword.clone();
        for (k, v) in &self.flags {
            s.push_str(&format!(" --{k}={v}"));
        }
        if !self.args.is_empty() {
            s.push(' ');
            s.push_str(&self.args);
        }
        for h in &self.heredocs {
            s.push('\n');
            s.push_str(&h.body);
            s.push_str(&h.word);
        }
        s
    }

    /// The arguments as shell or exec form (RUN, CMD, ENTRYPOINT).
    pub fn form(&self) -> Result<Form, ParseError> {
        let t = self.args.trim();
        if t.starts_with('[') {
            if let Ok(v) = serde_json::from_str::<Vec<String>>(t) {
                return Ok(Form::Exec(v));
            }
            if serde_json::from_str::<serde_json::Value>(t).is_ok() {
                return Err(self.err(
                    "the exec form must be a JSON array of strings, e.g. [\"echo\", \"hi\"]",
                ));
            }
        }
        Ok(Form::Shell(t.to_string()))
    }

    /// An error about this instruction.
    pub fn err(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            column: None,
            message: format!("{}: {}", self.keyword, message.into()),
        }
    }

    /// The value of flag `name`, if given.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Instructions and the flags each accepts.
const KNOWN: &[(&str, &[&str])] = &[
    ("FROM", &["platform"]),
    ("RUN", &[]),
    ("COPY", &["from", "chown", "chmod", "link"]),
    ("ADD", &["chown", "chmod", "link", "checksum"]),
    ("ENV", &[]),
    ("ARG", &[]),
    ("WORKDIR", &[]),
    ("USER", &[]),
    ("LABEL", &[]),
    ("EXPOSE", &[]),
    ("CMD", &[]),
    ("ENTRYPOINT", &[]),
    ("SHELL", &[]),
    (
        "HEALTHCHECK",
        &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
    ),
    ("STOPSIGNAL", &[]),
    ("VOLUME", &[]),
    ("MAINTAINER", &[]),
];

/// The most bytes of Dockerfile parsed (a larger one is refused).
pub const MAX_DOCKERFILE: usize = 1 << 20;

/// The most instructions a Dockerfile may hold.
pub const MAX_INSTRUCTIONS: usize = 10_000;

/// Parse a Dockerfile.
pub fn parse(text: &str) -> Result<Vec<Instruction>, ParseError> {
    if text.len() > MAX_DOCKERFILE {
        return Err(ParseError {
            line: 1,
            column: None,
            message: format!("the Dockerfile is larger than {MAX_DOCKERFILE} bytes"),
        });
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut escape = '\\';
    let mut i = 0;
    // Parser directives: leading `# key=value` comments.
    while i < lines.len() {
        let l = lines[i].trim();
        let Some(d) = l.strip_prefix('#') else { break };
        let Some((k, v)) = d.split_once('=') else {
            break;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "escape" => {
                escape = match v.trim() {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(ParseError {
                            line: i + 1,
                            column: None,
                            message: format!(
                                "escape directive {other:?} is not \\ or `; write `# escape=\\` or `# escape=``"
                            ),
                        })
                    }
                }
            }
            "syntax" | "check" => {}
            _ => break,
        }
        i += 1;
    }
    let mut out = Vec::new();
    while i < lines.len() {
        let start = i;
        let first = lines[i];
        i += 1;
        let t = first.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if out.len() >= MAX_INSTRUCTIONS {
            return Err(ParseError {
                line: start + 1,
                column: None,
                message: format!(
                    "the Dockerfile has more than {MAX_INSTRUCTIONS} instructions; merge steps \
                     (one RUN with &&) or split the build"
                ),
            });
        }
        // Join continuations; comment and empty lines inside are dropped.
        let mut joined = String::new();
        let mut cur = first.to_string();
        loop {
            let trimmed = cur.trim_end();
            if let Some(body) = trimmed.strip_suffix(escape) {
                joined.push_str(body);
                let mut next = None;
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    let lt = l.trim_start();
                    if lt.starts_with('#') || lt.is_empty() {
                        continue;
                    }
                    next = Some(l.to_string());
                    break;
                }
                match next {
                    Some(n) => cur = n,
                    None => break,
                }
            } else {
                joined.push_str(&cur);
                break;
            }
        }
        let t = joined.trim();
        let (kw, rest) = match t.find(char::is_whitespace) {
            Some(p) => (&t[..p], t[p..].trim_start()),
            None => (t, ""),
        };
        let keyword = kw.to_ascii_uppercase();
        let column = first.len() - first.trim_start().len() + 1;
        let Some((_, allowed)) = KNOWN.iter().find(|(k, _)| *k == keyword) else {
            let message = match keyword.as_str() {
                "ONBUILD" => "ONBUILD is not supported by dwell build".to_string(),
                _ => format!(
                    "unknown instruction {kw:?}; expected one of FROM, RUN, COPY, ADD, ENV, ARG, \
                     WORKDIR, USER, LABEL, EXPOSE, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, \
                     STOPSIGNAL, VOLUME"
                ),
            };
            return Err(ParseError {
                line: start + 1,
                column: Some(column),
                message,
            });
        };
        let (flags, args) = split_flags(rest, allowed).map_err(|m| ParseError {
            line: start + 1,
            column: None,
            message: format!("{keyword}: {m}"),
        })?;
        let mut ins = Instruction {
            line: start + 1,
            keyword,
            flags,
            args: args.to_string(),
            heredocs: Vec::new(),
        };
        if ins.keyword == "RUN" && !ins.args.trim_start().starts_with('[') {
            for (word, strip) in heredoc_words(&ins.args) {
                let mut body = String::new();
                let mut closed = false;
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    let l = if strip { l.trim_start_matches('\t') } else { l };
                    if l == word {
                        closed = true;
                        break;
                    }
                    body.push_str(l);
                    body.push('\n');
                }
                if !closed {
                    return Err(ins.err(format!(
                        "the heredoc <<{word} is not closed: add a line that is exactly {word}"
                    )));
                }
                ins.heredocs.push(Heredoc { word, body });
            }
        }
        check_shape(&ins)?;
        out.push(ins);
    }
    if out.is_empty() {
        return Err(ParseError {
            line: 1,
            column: None,
            message: "the Dockerfile has no instructions; it must start with FROM".into(),
        });
    }
    Ok(out)
}

/// `--name=value` flags in order.
type Flags = Vec<(String, String)>;

/// Leading `--name=value` flags (only those `allowed`), then the rest.
fn split_flags<'a>(mut rest: &'a str, allowed: &[&str]) -> Result<(Flags, &'a str), String> {
    let mut flags = Vec::new();
    while let Some(f) = rest.strip_prefix("--") {
        let end = f.find(char::is_whitespace).unwrap_or(f.len());
        let word = &f[..end];
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, v),
            None => (word, "true"),
        };
        if !allowed.contains(&name) {
            return Err(if allowed.is_empty() {
                format!("takes no flags (got --{name})")
            } else {
                format!(
                    "unknown flag --{name}; known: {}",
                    allowed
                        .iter()
                        .map(|a| format!("--{a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        flags.push((name.to_string(), value.to_string()));
        rest = f[end..].trim_start();
    }
    Ok((flags, rest))
}

/// The heredoc words of a RUN line (`<<EOF`, `<<-EOF`, `<<"EOF"`), in order.
fn heredoc_words(args: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let b = args.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' => quote = Some(c),
            None if c == b'<' && b.get(i + 1) == Some(&b'<') && b.get(i + 2) != Some(&b'<') => {
                let mut j = i + 2;
                let strip = b.get(j) == Some(&b'-');
                if strip {
                    j += 1;
                }
                let q = match b.get(j) {
                    Some(&x) if x == b'"' || x == b'\'' => {
                        j += 1;
                        Some(x)
                    }
                    _ => None,
                };
                let s = j;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'-')
                {
                    j += 1;
                }
                if j > s {
                    out.push((args[s..j].to_string(), strip));
                    if q.is_some() && b.get(j) == q.as_ref() {
                        j += 1;
                    }
                }
                i = j;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    out
}

/// Argument counts and forms that can be checked before any expansion.
fn check_shape(ins: &Instruction) -> Result<(), ParseError> {
    let a = ins.args.trim();
    let need = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(ins.err(what.to_string()))
        }
    };
    match ins.keyword.as_str() {
        "FROM" => need(!a.is_empty(), "needs an image: FROM IMAGE [AS NAME]"),
        "RUN" | "CMD" | "ENTRYPOINT" => {
            need(!a.is_empty() || ins.keyword != "RUN", "needs a command")?;
            ins.form().map(|_| ())
        }
        "COPY" | "ADD" => need(
            !a.is_empty() && (a.starts_with('[') || a.split_whitespace().count() >= 2),
            "needs at least one source and a destination: COPY SRC... DEST",
        ),
        "ENV" | "LABEL" | "ARG" | "WORKDIR" | "USER" | "EXPOSE" | "STOPSIGNAL" | "VOLUME"
        | "MAINTAINER" => need(!a.is_empty(), "needs an argument"),
        "SHELL" => match ins.form()? {
            Form::Exec(v) if !v.is_empty() => Ok(()),
            _ => Err(ins.err("needs a JSON array, e.g. SHELL [\"/bin/bash\", \"-c\"]")),
        },
        "HEALTHCHECK" => {
            let up = a.to_ascii_uppercase();
            need(
                up == "NONE" || up.starts_with("CMD ") || up.starts_with("CMD["),
                "needs NONE or CMD COMMAND, e.g. HEALTHCHECK --interval=5s CMD curl -f localhost",
            )
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_comments_and_forms() {
        let f = parse(
            "# syntax=docker/dockerfile:1\nFROM host AS base\n# c\nRUN echo a \\\n  # inner\n  && echo b\nCMD [\"sh\", \"-c\", \"x\"]\nENTRYPOINT echo hi\n",
        )
        .unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[1].keyword, "RUN");
        assert_eq!(f[1].line, 4);
        assert_eq!(f[1].args, "echo a   && echo b");
        assert_eq!(
            f[2].form().unwrap(),
            Form::Exec(vec!["sh".into(), "-c".into(), "x".into()])
        );
        assert_eq!(f[3].form().unwrap(), Form::Shell("echo hi".into()));
    }

    #[test]
    fn flags_and_errors() {
        let f = parse("FROM x\nCOPY --from=build --chown=1:2 /a /b\n").unwrap();
        assert_eq!(f[1].flag("from"), Some("build"));
        assert_eq!(f[1].flag("chown"), Some("1:2"));
        assert_eq!(f[1].args, "/a /b");
        let e = parse("FROM x\n  FROBNICATE y\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, Some(3)));
        assert!(e.message.contains("unknown instruction"), "{e}");
        let e = parse("FROM x\nCOPY --form=a b c\n").unwrap_err();
        assert!(e.message.contains("unknown flag --form"), "{e}");
        let e = parse("FROM x\nCOPY onlyone\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse("").is_err());
        assert!(parse("FROM x\nSHELL sh -c\n").is_err());
        assert!(parse("FROM x\nRUN [1, 2]\n").is_err());
    }

    #[test]
    fn heredocs_and_escape_directive() {
        let f = parse(
            "FROM x\nRUN <<EOF\necho one\necho two\nEOF\nRUN cat <<-'X' > /f\n\thello\n\tX\n",
        )
        .unwrap();
        assert_eq!(f[1].heredocs[0].body, "echo one\necho two\n");
        assert_eq!(f[2].heredocs[0].word, "X");
        assert_eq!(f[2].heredocs[0].body, "hello\n");
        assert!(parse("FROM x\nRUN <<EOF\necho\n").is_err());
        let f = parse("# escape=`\nFROM x\nRUN echo a `\n b\n").unwrap();
        assert_eq!(f[1].args, "echo a  b");
    }
}
