//! `.dockerignore` and glob matching on `/`-separated relative paths.
//!
//! A pattern is split into segments: `*` matches any run of characters in
//! one segment, `?` one character, `[...]` a class (`[!...]`/`[^...]`
//! negated, `a-z` ranges), `\` escapes, and a `**` segment matches any
//! number of segments. In `.dockerignore`, a path is excluded when the last
//! pattern matching it (or one of its parent dirs) is not a `!` pattern.

/// Longest glob pattern accepted (bytes), in `.dockerignore` and in
/// COPY/ADD sources: longer ones are refused with an error.
pub const MAX_PATTERN: usize = 4096;
/// Most rules a `.dockerignore` may hold.
pub const MAX_RULES: usize = 10_000;

/// One element of a segment pattern.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A literal character.
    Lit(char),
    /// `?`: any one character.
    Any,
    /// `[...]`: ranges (inclusive), negated or not.
    Class(Vec<(char, char)>, bool),
    /// `*` (runs collapsed into one).
    Star,
}

impl Tok {
    fn matches(&self, c: char) -> bool {
        match self {
            Tok::Lit(l) => *l == c,
            Tok::Any => true,
            Tok::Class(r, neg) => r.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *neg,
            Tok::Star => true,
        }
    }
}

/// Tokens of a segment pattern; consecutive `*` become one `Star`.
fn tokens(pat: &str) -> Vec<Tok> {
    let p: Vec<char> = pat.chars().collect();
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' => {
                if out.last() != Some(&Tok::Star) {
                    out.push(Tok::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Tok::Any);
                i += 1;
            }
            '\\' if i + 1 < p.len() => {
                out.push(Tok::Lit(p[i + 1]));
                i += 2;
            }
            '[' => match class(&p, i) {
                Some((t, next)) => {
                    out.push(t);
                    i = next;
                }
                // No closing bracket: a literal '['.
                None => {
                    out.push(Tok::Lit('['));
                    i += 1;
                }
            },
            c => {
                out.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    out
}

/// Parse the class starting at `p[i]` (a `[`); returns it and the index
/// after its `]`, or None when it is not closed.
fn class(p: &[char], i: usize) -> Option<(Tok, usize)> {
    let mut i = i + 1;
    let neg = matches!(p.get(i), Some('!' | '^'));
    if neg {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    while i < p.len() && (first || p[i] != ']') {
        first = false;
        let lo = if p[i] == '\\' && i + 1 < p.len() {
            i += 1;
            p[i]
        } else {
            p[i]
        };
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&x| x != ']') {
            ranges.push((lo, p[i + 2]));
            i += 3;
        } else {
            ranges.push((lo, lo));
            i += 1;
        }
    }
    (i < p.len()).then_some((Tok::Class(ranges, neg), i + 1))
}

/// The classic iterative wildcard match: `is_star` elements match any run
/// of items, every other element exactly one item (`one`). Only the last
/// star is a backtrack point, so the worst case is O(len(p) * len(s))
/// with no recursion.
fn wild<P, S>(
    p: &[P],
    s: &[S],
    is_star: impl Fn(&P) -> bool,
    one: impl Fn(&P, &S) -> bool,
) -> bool {
    let (mut pi, mut si) = (0, 0);
    // (pattern index after the star, item index the star's run ends at)
    let mut back: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && is_star(&p[pi]) {
            back = Some((pi + 1, si));
            pi += 1;
        } else if pi < p.len() && one(&p[pi], &s[si]) {
            pi += 1;
            si += 1;
        } else if let Some((bp, bs)) = back {
            // Let the last star take one more item and retry after it.
            back = Some((bp, bs + 1));
            pi = bp;
            si = bs + 1;
        } else {
            return false;
        }
    }
    while pi < p.len() && is_star(&p[pi]) {
        pi += 1;
    }
    pi == p.len()
}

/// Whether the glob segment `pat` matches the segment `s`.
pub fn segment_match(pat: &str, s: &str) -> bool {
    let p = tokens(pat);
    let s: Vec<char> = s.chars().collect();
    wild(&p, &s, |t| *t == Tok::Star, |t, c| t.matches(*c))
}

/// Whether the glob `pat` matches the whole relative path `path`.
pub fn path_match(pat: &str, path: &str) -> bool {
    let mut p: Vec<Vec<Tok>> = Vec::new();
    let mut star = false;
    for seg in pat.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if seg == "**" {
            // `**/**` is the same as `**`.
            if !star {
                p.push(vec![Tok::Star, Tok::Star]);
            }
            star = true;
        } else {
            p.push(tokens(seg));
            star = false;
        }
    }
    let is_dstar = |t: &Vec<Tok>| t.len() == 2 && t[0] == Tok::Star && t[1] == Tok::Star;
    let s: Vec<Vec<char>> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().collect())
        .collect();
    wild(&p, &s, is_dstar, |t, seg| {
        wild(t, seg, |x| *x == Tok::Star, |x, c| x.matches(*c))
    })
}

/// Whether `s` holds glob characters.
pub fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The patterns of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<(bool, String)>,
}

impl Ignore {
    /// Parse `.dockerignore` text. Refused: more than [`MAX_RULES`] rules
    /// or a pattern longer than [`MAX_PATTERN`] bytes.
    pub fn parse(text: &str) -> Result<Ignore, String> {
        let mut rules = Vec::new();
        for (n, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (neg, p) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let p = clean(p);
            if p.len() > MAX_PATTERN {
                return Err(format!(
                    ".dockerignore line {}: the pattern is {} bytes, over the limit of {MAX_PATTERN}; shorten it",
                    n + 1,
                    p.len()
                ));
            }
            if !p.is_empty() {
                if rules.len() >= MAX_RULES {
                    return Err(format!(
                        ".dockerignore has more than {MAX_RULES} rules; merge them with globs"
                    ));
                }
                rules.push((neg, p));
            }
        }
        Ok(Ignore { rules })
    }

    /// Whether the relative path `path` is excluded.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let segs: Vec<&str> = path.split('/').collect();
        let mut out = false;
        for (neg, pat) in &self.rules {
            // The path itself or any parent dir matching counts.
            let hit = (1..=segs.len()).any(|n| path_match(pat, &segs[..n].join("/")));
            if hit {
                out = !neg;
            }
        }
        out
    }

    /// Whether any `!` rule exists (then an excluded dir may still hold
    /// included files and must be walked).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(n, _)| *n)
    }
}

/// `./a//b/` -> `a/b`; leading `/` dropped.
pub fn clean(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(segment_match("*.rs", "main.rs"));
        assert!(!segment_match("*.rs", "main.rc"));
        assert!(segment_match("a?c", "abc"));
        assert!(segment_match("[a-c]x", "bx"));
        assert!(!segment_match("[!a-c]x", "bx"));
        assert!(path_match("**/*.log", "a/b/c.log"));
        assert!(path_match("**/*.log", "c.log"));
        assert!(!path_match("*.log", "a/c.log"));
        assert!(path_match("src/*", "src/x"));
    }

    #[test]
    fn dockerignore() {
        let i = Ignore::parse("# c\n*.log\nbuild/\n!build/keep.txt\n/secret\n").unwrap();
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("dir/a.log"));
        assert!(i.excluded("build/x/y"));
        assert!(!i.excluded("build/keep.txt"));
        assert!(i.excluded("secret"));
        assert!(!i.excluded("src/main.rs"));
        assert!(i.has_exceptions());
    }

    #[test]
    fn more_globs() {
        assert!(segment_match("a*b*c", "axxbyyc"));
        assert!(!segment_match("a*b*c", "axxbyy"));
        assert!(segment_match("*", ""));
        assert!(segment_match("\\*", "*"));
        assert!(!segment_match("\\*", "x"));
        assert!(segment_match("[ab", "[ab"));
        assert!(segment_match("x[]]", "x]"));
        assert!(path_match("a/**/b", "a/b"));
        assert!(path_match("a/**/b", "a/x/y/b"));
        assert!(!path_match("a/**/b", "a/x/y/c"));
        assert!(path_match("**", "a/b"));
        assert!(path_match("**/**/x", "x"));
        assert!(!path_match("a/*", "a/b/c"));
    }

    /// F13: patterns that made the recursive matcher overflow its stack or
    /// backtrack exponentially finish fast.
    #[test]
    fn pathological_patterns_are_fast() {
        let t = std::time::Instant::now();
        let stars = "*".repeat(200_000);
        assert!(segment_match(&stars, "anything"));
        assert!(!segment_match(&format!("{stars}b"), &"a".repeat(200)));
        let evil = format!("{}b", "*a".repeat(14));
        let name = "a".repeat(200);
        assert!(!segment_match(&evil, &name));
        assert!(segment_match(&evil, &format!("{name}b")));
        let deep = format!("{}x", "**/a/".repeat(2_000));
        let path = vec!["a"; 300].join("/");
        assert!(!path_match(&deep, &path));
        let dstar = format!("{}/b", ["**/*a"; 14].join("/"));
        assert!(!path_match(&dstar, &path));
        let el = t.elapsed();
        assert!(el < std::time::Duration::from_secs(2), "took {el:?}");
    }

    #[test]
    fn dockerignore_caps() {
        let long = "a".repeat(MAX_PATTERN + 1);
        let e = Ignore::parse(&format!("x\n{long}\n")).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let many = "x\n".repeat(MAX_RULES + 1);
        assert!(Ignore::parse(&many).unwrap_err().contains("rules"));
        // A 200k-star line (1 MiB file) is refused, not matched.
        assert!(Ignore::parse(&"*".repeat(200_000)).is_err());
    }
}
