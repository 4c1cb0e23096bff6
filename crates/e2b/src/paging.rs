//! Pages of a sorted list with an opaque cursor: the `X-Next-Token` header
//! of one page is the `nextToken` query of the next. A token is the sort
//! key of the last item returned, so pages stay consistent while items come
//! and go.

use crate::error::{E2bError, E2bResult};

/// The largest page.
pub const MAX_LIMIT: u32 = 1000;
/// The page size when the request gives none.
pub const DEFAULT_LIMIT: u32 = 100;

/// The page size of a request's `limit` query (absent: the default).
pub fn limit(l: Option<&str>) -> E2bResult<usize> {
    let n = match l {
        None => DEFAULT_LIMIT,
        Some(l) => l.parse::<u32>().map_err(|_| {
            E2bError::bad_request(format!(
                "limit {l:?} is not a number; give 1 to {MAX_LIMIT}"
            ))
        })?,
    };
    match n {
        0 => Err(E2bError::bad_request(format!(
            "limit 0 would return nothing; give 1 to {MAX_LIMIT}"
        ))),
        n => Ok(n.min(MAX_LIMIT) as usize),
    }
}

/// The response headers of a page: `X-Next-Token` when more follow.
pub fn next_header(next: Option<String>) -> E2bResult<axum::http::HeaderMap> {
    let mut headers = axum::http::HeaderMap::new();
    if let Some(t) = next {
        headers.insert(
            "x-next-token",
            t.parse()
                .map_err(|_| E2bError::new(500, "a page token is not a valid header"))?,
        );
    }
    Ok(headers)
}

/// The token of an item with sort key (`at`, `id`).
pub fn token(at: i64, id: &str) -> String {
    format!("{at}_{id}")
}

/// Parse a token back into its sort key.
pub fn parse(t: &str) -> E2bResult<(i64, String)> {
    t.split_once('_')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_string())))
        .ok_or_else(|| {
            E2bError::bad_request(format!(
                "nextToken {t:?} is not a token this server issued; pass the X-Next-Token header of the previous page"
            ))
        })
}

/// One page of `items` (already sorted by `key`, ascending or descending)
/// after the cursor, and the token of the next page if there is one.
pub fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> (i64, String),
    after: Option<&str>,
    descending: bool,
    limit: usize,
) -> E2bResult<(Vec<T>, Option<String>)> {
    let cursor = after.filter(|t| !t.is_empty()).map(parse).transpose()?;
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|it| match &cursor {
            None => true,
            Some(c) if descending => key(it) < *c,
            Some(c) => key(it) > *c,
        })
        .collect();
    let more = rest.len() > limit;
    rest.truncate(limit);
    let next = if more {
        rest.last().map(|it| {
            let (at, id) = key(it);
            token(at, &id)
        })
    } else {
        None
    };
    Ok((rest, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_every_item_once() {
        let items: Vec<(i64, String)> = (0..5).map(|i| (i / 2, format!("id{i}"))).collect();
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let (p, next) = page(items.clone(), |x| x.clone(), token.as_deref(), false, 2).unwrap();
            seen.extend(p);
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, items);
        assert!(parse("garbage").is_err());
        assert!(limit(Some("0")).is_err());
        assert!(
            limit(Some("ten")).is_err(),
            "a bad limit is refused, not ignored"
        );
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT as usize);
        assert_eq!(limit(Some("5000")).unwrap(), MAX_LIMIT as usize);
    }
}
