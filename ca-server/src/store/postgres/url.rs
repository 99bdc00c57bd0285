//! Database URLs: checking one before anything connects, and writing one in messages
//! without its password.

use std::time::Duration;

use tokio_postgres::Config;

use super::describe;

/// How long opening a connection may take, unless the URL says (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks a database URL and fills in what it leaves out (connect timeout, application
/// name); see [`super::PostgresStore::parse_url`].
pub(super) fn parse(url: &str) -> Result<Config, String> {
    let redacted = redact(url);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "database {redacted:?}: use a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DBNAME (omit it for the embedded store)"
        ));
    }
    let mut config: Config = url
        .parse()
        .map_err(|e| format!("database {redacted:?}: {}", describe(&e)))?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(format!(
            "database {redacted:?}: sslmode=require is not supported by this build; reach PostgreSQL over loopback, a trusted network or a TLS tunnel"
        ));
    }
    if config.get_hosts().is_empty() {
        return Err(format!("database {redacted:?}: the URL names no host"));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("ca-server");
    }
    Ok(config)
}

/// A URL fit for messages: the password replaced.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{user}:***@{host}")
            } else {
                format!("{user}@{host}")
            }
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<&str> = query
                .split('&')
                .map(|kv| {
                    if kv.starts_with("password=") {
                        "password=***"
                    } else {
                        kv
                    }
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact("postgres://dtca:s3cret@db.example.com:5432/dtca"),
            "postgres://dtca:***@db.example.com:5432/dtca"
        );
        assert_eq!(
            redact("postgres://dtca@db/dtca?password=s3cret&connect_timeout=3"),
            "postgres://dtca@db/dtca?password=***&connect_timeout=3"
        );
        assert_eq!(redact("postgres://db/dtca"), "postgres://db/dtca");
    }

    #[test]
    fn accepts_postgres_urls_and_refuses_others_without_echoing_the_password() {
        let config = parse("postgres://u:pw@127.0.0.1:5433/dtca").unwrap();
        assert_eq!(config.get_dbname(), Some("dtca"));
        assert_eq!(config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let err = parse("mysql://u:pw@host/db").unwrap_err();
        assert!(
            err.contains("PostgreSQL URL") && !err.contains("pw"),
            "{err}"
        );
        let err = parse("postgres://u:pw@h/db?sslmode=require").unwrap_err();
        assert!(err.contains("sslmode") && !err.contains(":pw"), "{err}");
    }
}
