//! Identity tokens (docs/protocol.md §7): ES256 JWTs signed in the HSM with the active
//! `jwt` key, carrying exactly the claims of §7.1 and the scope claims of §7.3.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use time::{Date, Month, OffsetDateTime};

use super::claims::StoredClaims;
use super::config::SCOPES;

/// The payload of an identity token, in §7.1 order; absent claims are omitted.
#[derive(Debug, Serialize)]
pub struct IdClaims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub sid: &'a str,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birthdate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_over_18: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_over_21: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nationality: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuing_country: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_expiry: Option<&'a str>,
}

/// Granted scopes in the order of the §7.3 table.
pub fn ordered_scopes(granted: &[String]) -> Vec<&'static str> {
    SCOPES.into_iter().filter(|s| granted.iter().any(|g| g == s)).collect()
}

/// Fills the scope claims of `claims` granted by `scopes` (§7.3); the age claims are
/// derived on the UTC date of `iat` and present only when certain (§12 rule 8).
pub fn scope_claims<'a>(base: IdClaims<'a>, claims: &'a StoredClaims, scopes: &[&str]) -> IdClaims<'a> {
    let mut c = base;
    let today = OffsetDateTime::from_unix_timestamp(c.iat).map(|t| t.date()).ok();
    for scope in scopes {
        match *scope {
            "name" => {
                c.given_name = claims.given_name.as_deref();
                c.family_name = claims.family_name.as_deref();
            }
            "birthdate" => c.birthdate = claims.birthdate.as_deref(),
            "age" => {
                if let (Some(dob), Some(today)) = (claims.birthdate.as_deref(), today) {
                    c.age_over_18 = age_at_least(dob, today, 18);
                    c.age_over_21 = age_at_least(dob, today, 21);
                }
            }
            "nationality" => c.nationality = claims.nationality.as_deref(),
            "document" => {
                c.document_type = claims.document_type.as_deref();
                c.document_number = claims.document_number.as_deref();
                c.issuing_country = claims.issuing_country.as_deref();
                c.document_expiry = claims.document_expiry.as_deref();
            }
            _ => {}
        }
    }
    c
}

/// The date in `year` on which a person born on `birth` has their birthday; a
/// 29 February birthday falls on 1 March in common years.
fn birthday_in(year: i32, birth: Date) -> Option<Date> {
    Date::from_calendar_date(year, birth.month(), birth.day())
        .ok()
        .or_else(|| Date::from_calendar_date(year, Month::March, 1).ok())
}

fn has_reached(birth: Date, today: Date, years: i32) -> Option<bool> {
    Some(today >= birthday_in(birth.year() + years, birth)?)
}

/// Whether someone born on `dob` (`YYYY-MM-DD`, `YYYY-MM` or `YYYY`) is at least
/// `years` old on `today`; `None` when a partial date leaves it uncertain.
pub fn age_at_least(dob: &str, today: Date, years: i32) -> Option<bool> {
    let parts: Vec<&str> = dob.split('-').collect();
    let year: i32 = parts.first()?.parse().ok()?;
    let (earliest, latest) = match parts.as_slice() {
        [_] => (
            Date::from_calendar_date(year, Month::January, 1).ok()?,
            Date::from_calendar_date(year, Month::December, 31).ok()?,
        ),
        [_, m] => {
            let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
            let first = Date::from_calendar_date(year, month, 1).ok()?;
            let last = Date::from_calendar_date(year, month, time::util::days_in_month(month, year)).ok()?;
            (first, last)
        }
        [_, m, d] => {
            let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
            let day = Date::from_calendar_date(year, month, d.parse().ok()?).ok()?;
            (day, day)
        }
        _ => return None,
    };
    // Born on `latest` and already of age: certainly of age. Born on `earliest` and
    // not yet: certainly not. Otherwise it depends on the unknown day or month.
    if has_reached(latest, today, years)? {
        Some(true)
    } else if !has_reached(earliest, today, years)? {
        Some(false)
    } else {
        None
    }
}

/// The signing input `b64u(header).b64u(payload)` of a JWT.
pub fn signing_input<T: Serialize>(kid: &str, claims: &T) -> Result<String, serde_json::Error> {
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn full_dates() {
        assert_eq!(age_at_least("2008-04-01", date!(2026 - 04 - 01), 18), Some(true));
        assert_eq!(age_at_least("2008-04-01", date!(2026 - 03 - 31), 18), Some(false));
        // 29 February: reached on 1 March in common years, on 29 February in leap years.
        assert_eq!(age_at_least("2008-02-29", date!(2026 - 02 - 28), 18), Some(false));
        assert_eq!(age_at_least("2008-02-29", date!(2026 - 03 - 01), 18), Some(true));
        assert_eq!(age_at_least("2004-02-29", date!(2025 - 03 - 01), 21), Some(true));
        assert_eq!(age_at_least("2004-02-29", date!(2025 - 02 - 28), 21), Some(false));
        assert_eq!(age_at_least("2003-02-28", date!(2024 - 02 - 28), 21), Some(true));
    }

    #[test]
    fn partial_dates_only_when_certain() {
        assert_eq!(age_at_least("2008", date!(2026 - 12 - 31), 18), Some(true));
        assert_eq!(age_at_least("2008", date!(2026 - 06 - 01), 18), None);
        assert_eq!(age_at_least("2008", date!(2025 - 12 - 31), 18), Some(false));
        assert_eq!(age_at_least("2008-06", date!(2026 - 06 - 30), 18), Some(true));
        assert_eq!(age_at_least("2008-06", date!(2026 - 06 - 15), 18), None);
        assert_eq!(age_at_least("2008-06", date!(2026 - 05 - 31), 18), Some(false));
        assert_eq!(age_at_least("1990", date!(2026 - 01 - 01), 21), Some(true));
        for bad in ["", "x", "2008-13", "2008-02-30", "2008-1-1-1"] {
            assert_eq!(age_at_least(bad, date!(2026 - 01 - 01), 18), None, "{bad}");
        }
    }

    #[test]
    fn scope_order() {
        let g = vec!["document".to_string(), "name".into(), "age".into()];
        assert_eq!(ordered_scopes(&g), vec!["name", "age", "document"]);
    }
}
