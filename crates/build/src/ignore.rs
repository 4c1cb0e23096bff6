//! `.dockerignore` and glob matching on `/`-separated relative paths.
//!
//! A pattern is split into segments: `*` matches any run of characters in
//! one segment, `?` one character, `[...]` a class (`[!...]`/`[^...]`
//! negated, `a-z` ranges), `\` escapes, and a `**` segment matches any
//! number of segments. In `.dockerignore`, a path is excluded when the last
//! pattern matching it (or one of its parent dirs) is not a `!` pattern.

/// Whether the glob segment `pat` matches the segment `s`.
pub fn segment_match(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let s: Vec<char> = s.chars().collect();
    seg(&p, &s)
}

fn seg(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|i| seg(&p[1..], &s[i..])),
        Some('?') => !s.is_empty() && seg(&p[1..], &s[1..]),
        Some('[') => {
            let Some(c) = s.first() else { return false };
            let mut i = 1;
            let neg = matches!(p.get(1), Some('!' | '^'));
            if neg {
                i += 1;
            }
            let mut hit = false;
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
                    let hi = p[i + 2];
                    hit |= lo <= *c && *c <= hi;
                    i += 3;
                } else {
                    hit |= lo == *c;
                    i += 1;
                }
            }
            if i >= p.len() {
                // No closing bracket: a literal '['.
                return *c == '[' && seg(&p[1..], &s[1..]);
            }
            hit != neg && seg(&p[i + 1..], &s[1..])
        }
        Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && seg(&p[2..], &s[1..]),
        Some(c) => s.first() == Some(c) && seg(&p[1..], &s[1..]),
    }
}

/// Whether the glob `pat` matches the whole relative path `path`.
pub fn path_match(pat: &str, path: &str) -> bool {
    let p: Vec<&str> = pat
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let s: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    segs(&p, &s)
}

fn segs(p: &[&str], s: &[&str]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(&"**") => (0..=s.len()).any(|i| segs(&p[1..], &s[i..])),
        Some(x) => !s.is_empty() && segment_match(x, s[0]) && segs(&p[1..], &s[1..]),
    }
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
    /// Parse `.dockerignore` text.
    pub fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for l in text.lines() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (neg, p) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let p = clean(p);
            if !p.is_empty() {
                rules.push((neg, p));
            }
        }
        Ignore { rules }
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
        let i = Ignore::parse("# c\n*.log\nbuild/\n!build/keep.txt\n/secret\n");
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("dir/a.log"));
        assert!(i.excluded("build/x/y"));
        assert!(!i.excluded("build/keep.txt"));
        assert!(i.excluded("secret"));
        assert!(!i.excluded("src/main.rs"));
        assert!(i.has_exceptions());
    }
}
