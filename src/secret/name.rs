//! Secret names follow Kubernetes' DNS-1123 subdomain rules.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid name {0:?}: must be 1-253 characters")]
    Length(String),
    #[error("invalid name {0:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")]
    Characters(String),
}

/// Checks `name` against Kubernetes' `IsDNS1123Subdomain`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > 253 {
        return Err(NameError::Length(name.to_string()));
    }
    let ok = name.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(NameError::Characters(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns1123_subdomains() {
        for n in ["a", "regcred", "my-secret.v2", "0abc", "a.b.c"] {
            assert_eq!(validate_name(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for n in [
            "",
            "A",
            "-a",
            "a-",
            "a..b",
            "a_b",
            ".a",
            "a/b",
            &"a".repeat(254),
        ] {
            assert!(validate_name(n).is_err(), "{n}");
        }
    }
}
