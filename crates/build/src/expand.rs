//! Words and variables: splitting an instruction's arguments into words
//! (single and double quotes, backslash escapes) while expanding `$VAR`,
//! `${VAR}`, `${VAR:-default}` and `${VAR:+alternative}` from the values
//! in scope (ARGs and ENVs of the stage). Single-quoted text is literal.

use std::collections::BTreeMap;

/// Variables in scope at one step.
pub type Vars = BTreeMap<String, String>;

/// The most bytes one expanded word or value may hold: expansion stops
/// with an error before growing past it (`ENV a=$a$a` repeated would
/// otherwise double without bound inside the daemon).
pub const MAX_VALUE: usize = 1 << 20;
/// The most bytes all the words of one instruction may expand to.
pub const MAX_EXPANDED: usize = 4 << 20;

fn too_long() -> String {
    format!(
        "a value expands to more than {MAX_VALUE} bytes (or the instruction to more than \
         {MAX_EXPANDED}); variables that repeat themselves (ENV a=$a$a) grow without bound, \
         keep values short"
    )
}

/// Append `v` to `out`, refusing to grow it past [`MAX_VALUE`].
fn push_capped(out: &mut String, v: &str) -> Result<(), String> {
    if out.len() + v.len() > MAX_VALUE {
        return Err(too_long());
    }
    out.push_str(v);
    Ok(())
}

/// Split `s` into words, expanding variables (unless `expand` is false).
pub fn words(s: &str, vars: &Vars, expand: bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    // Bytes of the finished words.
    let mut done = 0usize;
    while i < chars.len() {
        if done + cur.len() > MAX_EXPANDED {
            return Err(too_long());
        }
        let c = chars[i];
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    done += cur.len();
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                i += 1;
            }
            '\'' => {
                in_word = true;
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| x == '\'')
                    .ok_or("a single quote is not closed")?;
                cur.extend(&chars[i + 1..i + 1 + end]);
                i += end + 2;
            }
            '"' => {
                in_word = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("a double quote is not closed".into()),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\' | '$')) => {
                            cur.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('$') if expand => i = dollar(&chars, i, vars, &mut cur)?,
                        Some(&x) => {
                            cur.push(x);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(&n) = chars.get(i + 1) {
                    cur.push(n);
                }
                i += 2;
            }
            '$' if expand => {
                in_word = true;
                i = dollar(&chars, i, vars, &mut cur)?;
            }
            c => {
                in_word = true;
                cur.push(c);
                i += 1;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Expand variables in `s` keeping quotes and spacing as they are (for
/// text that is not split into words, e.g. the legacy `ENV K some value`).
pub fn expand_str(s: &str, vars: &Vars) -> Result<String, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut single = false;
    while i < chars.len() {
        match chars[i] {
            '\'' => {
                single = !single;
                out.push('\'');
                i += 1;
            }
            '\\' if !single && chars.get(i + 1) == Some(&'$') => {
                out.push('$');
                i += 2;
            }
            '$' if !single => i = dollar(&chars, i, vars, &mut out)?,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Expand the variable reference at `chars[i]` (a `$`) into `out`;
/// returns the index after it.
fn dollar(chars: &[char], i: usize, vars: &Vars, out: &mut String) -> Result<usize, String> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(i + 1) {
        Some('{') => {
            let close = chars[i + 2..]
                .iter()
                .position(|&c| c == '}')
                .ok_or("a ${ is not closed with }")?;
            let inner: String = chars[i + 2..i + 2 + close].iter().collect();
            let (name, op) = match inner.find(':') {
                Some(p) => (&inner[..p], Some(&inner[p..])),
                None => (inner.as_str(), None),
            };
            if name.is_empty() || !name.chars().all(name_char) {
                return Err(format!("bad variable reference ${{{inner}}}"));
            }
            let val = vars.get(name).filter(|v| !v.is_empty());
            match op {
                None => push_capped(out, vars.get(name).map(String::as_str).unwrap_or(""))?,
                Some(o) if o.starts_with(":-") => match val {
                    Some(v) => push_capped(out, v)?,
                    None => push_capped(out, &expand_str(&o[2..], vars)?)?,
                },
                Some(o) if o.starts_with(":+") => {
                    if val.is_some() {
                        push_capped(out, &expand_str(&o[2..], vars)?)?;
                    }
                }
                Some(o) => {
                    return Err(format!(
                        "unsupported modifier {o:?} in ${{{inner}}}; use :- or :+"
                    ))
                }
            }
            Ok(i + 3 + close)
        }
        Some(&c) if name_char(c) && !c.is_ascii_digit() => {
            let mut j = i + 1;
            while j < chars.len() && name_char(chars[j]) {
                j += 1;
            }
            let name: String = chars[i + 1..j].iter().collect();
            push_capped(out, vars.get(&name).map(String::as_str).unwrap_or(""))?;
            Ok(j)
        }
        _ => {
            out.push('$');
            Ok(i + 1)
        }
    }
}

/// `KEY=value` pairs (ENV, LABEL, ARG with defaults); a word without `=`
/// is a key without a value. The legacy `ENV KEY value with spaces` form is
/// accepted when `legacy` is set and the first word has no `=`.
pub fn pairs(s: &str, vars: &Vars, legacy: bool) -> Result<Vec<(String, Option<String>)>, String> {
    let t = s.trim();
    let first = t.split_whitespace().next().unwrap_or("");
    if legacy && !first.contains('=') {
        let rest = t[first.len()..].trim();
        if rest.is_empty() {
            return Err(format!("{first} has no value; write {first}=VALUE"));
        }
        let w = words(rest, vars, true)?;
        return Ok(vec![(first.to_string(), Some(w.join(" ")))]);
    }
    let mut out = Vec::new();
    for w in words(t, vars, true)? {
        match w.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
            None => out.push((w, None)),
        }
    }
    for (k, _) in &out {
        if k.is_empty() {
            return Err("a name is empty (a pair starts with =)".into());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Vars {
        [("A", "1"), ("B", "two words"), ("E", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn words_quotes_and_vars() {
        assert_eq!(
            words(
                r#"a "$B c" '$A' ${A}x $NOPE\ y ${E:-d} ${A:+alt}"#,
                &v(),
                true
            )
            .unwrap(),
            vec!["a", "two words c", "$A", "1x", " y", "d", "alt"]
        );
        assert_eq!(words("$A", &v(), false).unwrap(), vec!["$A"]);
        assert!(words("'open", &v(), true).is_err());
        assert!(words("${A", &v(), true).is_err());
    }

    #[test]
    fn pairs_and_legacy() {
        assert_eq!(
            pairs("K=$A L=\"x y\" M", &v(), false).unwrap(),
            vec![
                ("K".to_string(), Some("1".to_string())),
                ("L".to_string(), Some("x y".to_string())),
                ("M".to_string(), None)
            ]
        );
        assert_eq!(
            pairs("PATH /a:$A  b", &v(), true).unwrap(),
            vec![("PATH".to_string(), Some("/a:1 b".to_string()))]
        );
    }

    /// F12: a self-doubling variable stops at the cap with an error
    /// instead of growing until the daemon aborts.
    #[test]
    fn expansion_is_capped() {
        let mut vars = Vars::new();
        vars.insert("a".into(), "x".repeat(1024));
        let mut err = None;
        for _ in 0..40 {
            match pairs("a=$a$a", &vars, true) {
                Ok(p) => {
                    let v = p[0].1.clone().unwrap();
                    assert!(v.len() <= MAX_VALUE);
                    vars.insert("a".into(), v);
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(err.unwrap().contains("expands to more than"));
        // Many copies of a big value in one instruction hit the total cap.
        vars.insert("a".into(), "x".repeat(MAX_VALUE / 2));
        let many = "k=$a ".repeat(20);
        assert!(pairs(&many, &vars, false).is_err());
        assert!(expand_str(&"${a}".repeat(4), &vars).is_err());
        assert!(words("${b:-$a$a$a}", &vars, true).is_err());
    }
}
