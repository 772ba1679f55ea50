//! `RegistrySecret`: the resolved server/username/password/email a client needs to log in.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// Credentials for one registry. The password never appears in `Debug` or `Display`.
#[derive(Clone)]
pub struct RegistrySecret {
    pub server: String,
    pub username: String,
    pub password: SecretString,
    pub email: Option<String>,
}

impl RegistrySecret {
    pub fn new(
        server: impl Into<String>,
        username: impl Into<String>,
        password: SecretString,
    ) -> Self {
        Self {
            server: server.into(),
            username: username.into(),
            password,
            email: None,
        }
    }

    /// Docker stores identity tokens under the username `<token>`.
    pub fn is_identity_token(&self) -> bool {
        self.username == "<token>"
    }

    /// base64(`user:pass`), the `auth` field of docker config files.
    pub fn basic_auth(&self) -> String {
        use base64::Engine;
        let joined = zeroize::Zeroizing::new(format!(
            "{}:{}",
            self.username,
            self.password.expose_secret()
        ));
        base64::engine::general_purpose::STANDARD.encode(joined.as_bytes())
    }
}

impl fmt::Debug for RegistrySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrySecret")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"********")
            .field("email", &self.email)
            .finish()
    }
}

impl fmt::Display for RegistrySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} (password hidden)", self.username, self.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_password() {
        let s = RegistrySecret::new("quay.io", "alice", SecretString::from("canary-p4ss"));
        assert!(!format!("{s:?}").contains("canary-p4ss"));
        assert!(!format!("{s}").contains("canary-p4ss"));
        assert!(format!("{s:?}").contains("alice"));
    }

    #[test]
    fn basic_auth_is_base64_of_user_colon_pass() {
        let s = RegistrySecret::new("r", "alice", SecretString::from("s3cr3t"));
        assert_eq!(s.basic_auth(), "YWxpY2U6czNjcjN0");
    }
}
