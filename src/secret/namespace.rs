//! Namespaces (the default one, the rule a name must follow) and `NAME` / `NS/NAME`
//! specs naming a stored secret.

use std::fmt;

use super::{validate_name, NameError};

/// The namespace used when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Namespaces are DNS-1123 labels: they name files, so nothing else may pass.
pub fn validate_namespace(ns: &str) -> Result<(), NameError> {
    validate_name(ns)?;
    if ns.contains('.') || ns.len() > 63 {
        return Err(NameError::Characters(ns.to_string()));
    }
    Ok(())
}

/// A stored secret named by a config: `NAME` (in a default namespace) or `NS/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretName {
    pub namespace: String,
    pub name: String,
}

impl SecretName {
    /// Splits `spec` at its first `/`; a bare name is in `default_ns`. Neither part is
    /// validated here: the store's lookup does that.
    pub fn parse(spec: &str, default_ns: &str) -> Self {
        let (namespace, name) = spec.split_once('/').unwrap_or((default_ns, spec));
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_takes_the_default_namespace() {
        let n = SecretName::parse("regcred", "team-a");
        assert_eq!(
            (n.namespace.as_str(), n.name.as_str()),
            ("team-a", "regcred")
        );
        let n = SecretName::parse("ops/regcred", "team-a");
        assert_eq!((n.namespace.as_str(), n.name.as_str()), ("ops", "regcred"));
        assert_eq!(n.to_string(), "ops/regcred");
        // Only the first slash splits, as before.
        let n = SecretName::parse("a/b/c", "d");
        assert_eq!((n.namespace.as_str(), n.name.as_str()), ("a", "b/c"));
    }

    #[test]
    fn namespaces_are_labels() {
        assert_eq!(validate_namespace("team-a"), Ok(()));
        assert!(validate_namespace("a.b").is_err());
        assert!(validate_namespace(&"a".repeat(64)).is_err());
    }
}
