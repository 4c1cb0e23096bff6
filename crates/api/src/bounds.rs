//! Range checks of request numbers, made before they reach the control
//! plane: a duration past [`MAX_DURATION_SECS`] or a count or size past
//! [`MAX_QUANTITY`] is a 400 that names the field, never an overflow in
//! millisecond arithmetic or a value the metadata store cannot hold.

use dwell_contract::sandbox::{DurationArg, PolicyArgs, SizeArg, MAX_DURATION_SECS, MAX_QUANTITY};

use crate::error::{ApiError, ApiResult};

/// A duration field: at most [`MAX_DURATION_SECS`], as a number of
/// seconds or as text (`10m`, `7d`).
pub fn duration(field: &str, d: &DurationArg) -> ApiResult<()> {
    let secs = match d {
        DurationArg::Seconds(s) => *s,
        DurationArg::Text(t) => {
            let text = dwell_control::policy::DurationArg::Text(t.clone());
            text.millis(field)?.unwrap_or(0) / 1000
        }
    };
    if secs > MAX_DURATION_SECS {
        return Err(ApiError::bad_request(format!(
            "{field}: a duration of {secs} seconds is longer than the most a policy takes ({MAX_DURATION_SECS} seconds, 100 years); give a shorter one, or `off`"
        )));
    }
    Ok(())
}

/// Every duration of a set of policies.
pub fn policies(field: &str, p: &PolicyArgs) -> ApiResult<()> {
    let named = [
        ("ttl", &p.ttl),
        ("idle_timeout", &p.idle_timeout),
        ("pause_after", &p.pause_after),
        ("archive_after", &p.archive_after),
        ("delete_after", &p.delete_after),
        ("max_lifetime", &p.max_lifetime),
    ];
    for (name, d) in named {
        if let Some(d) = d {
            duration(&format!("{field}.{name}"), d)?;
        }
    }
    Ok(())
}

/// A count or a size in bytes: at most [`MAX_QUANTITY`].
pub fn quantity(field: &str, v: Option<u64>) -> ApiResult<()> {
    match v {
        Some(n) if n > MAX_QUANTITY => Err(ApiError::bad_request(format!(
            "{field}: {n} is more than the largest value the daemon keeps ({MAX_QUANTITY})"
        ))),
        _ => Ok(()),
    }
}

/// A size given as a number of bytes (text sizes are parsed, and checked,
/// where they are read).
pub fn size(field: &str, v: &Option<SizeArg>) -> ApiResult<()> {
    match v {
        Some(SizeArg::Bytes(b)) => quantity(field, Some(*b)),
        _ => Ok(()),
    }
}

/// A number of vCPUs: finite and not negative.
pub fn vcpus(field: &str, v: Option<f64>) -> ApiResult<()> {
    match v {
        Some(x) if !x.is_finite() || x < 0.0 => Err(ApiError::bad_request(format!(
            "{field}: {x} is not a number of vCPUs; give a positive number like 0.5 or 2"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_past_a_century_are_refused() {
        assert!(duration("ttl", &DurationArg::Seconds(MAX_DURATION_SECS)).is_ok());
        let e = duration("ttl", &DurationArg::Seconds(u64::MAX)).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("ttl: "), "{}", e.message);
        assert!(duration("ttl", &DurationArg::Text("10m".into())).is_ok());
        assert!(duration("ttl", &DurationArg::Text("200years".into())).is_err());
        assert!(duration("ttl", &DurationArg::Text("soon".into())).is_err());
        let p = PolicyArgs {
            idle_timeout: Some(DurationArg::Seconds(1 << 63)),
            ..Default::default()
        };
        let e = policies("policies", &p).unwrap_err();
        assert!(
            e.message.starts_with("policies.idle_timeout: "),
            "{}",
            e.message
        );
    }

    #[test]
    fn quantities_fit_the_store() {
        assert!(quantity("max_storage", Some(MAX_QUANTITY)).is_ok());
        assert!(quantity("max_storage", Some(MAX_QUANTITY + 1)).is_err());
        assert!(size("disk", &Some(SizeArg::Bytes(u64::MAX))).is_err());
        assert!(size("disk", &Some(SizeArg::Text("1G".into()))).is_ok());
        assert!(vcpus("vcpus", Some(-1.0)).is_err());
        assert!(vcpus("vcpus", Some(0.5)).is_ok());
    }
}
