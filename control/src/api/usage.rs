//! `GET /v1/deployments/{instance}/usage?from=&to=`: the CPUs charged per UTC day (the day's
//! highest sample), behind the `billing` permission.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    Json,
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    answers::{self, Usage, UsageOpen},
    error::{ApiError, ErrorBody},
    App,
};
use crate::{
    domain::{
        billing::{day_of, UsageDay, DAY_MS},
        Permission,
    },
    runtime::now,
};

/// Days shown when `from` is not given.
const DEFAULT_DAYS: u64 = 31;

/// `?from=YYYY-MM-DD&to=YYYY-MM-DD` (both included).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Range {
    /// First day, `YYYY-MM-DD` (default: 30 days before `to`).
    #[param(format = Date)]
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (default: today, UTC).
    #[param(format = Date)]
    to: Option<String>,
}

/// `YYYY-MM-DD` of a UTC day.
fn date(day: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(day.saturating_mul(DAY_MS));
    humantime::format_rfc3339(t).to_string()[..10].to_string()
}

/// The UTC day of `YYYY-MM-DD`.
fn parse_date(key: &str, s: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::bad_request(format!("{key}: expected a date as YYYY-MM-DD"));
    if s.len() != 10 {
        return Err(bad());
    }
    let t = humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).map_err(|_| bad())?;
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| bad())?;
    Ok(ms.as_millis() as u64 / DAY_MS)
}

fn day_answer(d: &UsageDay) -> answers::UsageDay {
    answers::UsageDay {
        date: date(d.day),
        node_cpus: d.tier.node_cpus,
        db_cpus: d.tier.db_cpus,
        samples: d.samples,
        carried: d.samples == 0,
    }
}

/// CPUs charged per UTC day: each day's highest sample.
///
/// A day without samples carries the last known tier; today's day, not settled yet, is
/// `in_progress`. Needs `billing`.
#[utoipa::path(get, path = "/v1/deployments/{instance}/usage", tag = "deployments",
    params(("instance" = String, Path, description = "Instance name"), Range),
    responses(
        (status = 200, description = "The days", body = Usage),
        (status = 400, description = "Bad date, or from after to (JSON), or a query parameter of the wrong type (plain text, from the router)", content((ErrorBody = "application/json"), (String = "text/plain"))),
        (status = 403, description = "Missing `billing`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
    ))]
pub(super) async fn usage(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(range): Query<Range>,
) -> Result<Json<Usage>, ApiError> {
    app.handle(&headers, "usage.read", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::Billing, &dep)?;
        let today = day_of(now());
        let to = match &range.to {
            Some(s) => parse_date("to", s)?,
            None => today,
        };
        let from = match &range.from {
            Some(s) => parse_date("from", s)?,
            None => to.saturating_sub(DEFAULT_DAYS - 1),
        };
        if from > to {
            return Err(ApiError::bad_request("from is after to"));
        }
        let store = cx.app.rt.store();
        let days = store
            .usage(&instance, from, to)?
            .iter()
            .map(day_answer)
            .collect();
        // The day in progress: its highest sample so far, settled at 00:00 UTC.
        let open = store
            .meter(&instance)?
            .open
            .filter(|o| (from..=to).contains(&o.day))
            .map(|o| UsageOpen {
                date: date(o.day),
                node_cpus: o.max.node_cpus,
                db_cpus: o.max.db_cpus,
                samples: o.samples,
            });
        Ok(Json(Usage {
            instance: instance.clone(),
            from: date(from),
            to: date(to),
            days,
            in_progress: open,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(parse_date("from", "2026-12-02").unwrap(), 20_789);
        assert_eq!(date(20_789), "2026-12-02");
        assert!(parse_date("from", "2026-12-2").is_err());
        assert!(parse_date("from", "yesterday!").is_err());
    }
}
