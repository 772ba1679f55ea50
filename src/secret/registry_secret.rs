//! `RegistrySecret`: the resolved server/username/password/email a client needs to log in,
//! and the base64 `user:pass` form docker files carry it in.

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

/// base64 `user:pass` → (user, pass). The `auth` field of docker config files and
/// Kubernetes dockerconfigjson Secrets.
pub fn decode_basic_auth(auth: &str) -> Result<(String, SecretString), &'static str> {
    let bytes = zeroize::Zeroizing::new(decode_base64(auth).ok_or("is not valid base64")?);
    let text = std::str::from_utf8(&bytes).map_err(|_| "is not UTF-8")?;
    let (user, pass) = text
        .split_once(':')
        .ok_or("does not decode to user:password")?;
    Ok((user.to_string(), SecretString::from(pass)))
}

/// Go's `base64.StdEncoding` as the API server uses it: line breaks are
/// ignored; we also forgive missing padding and non-zero trailing bits.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let cleaned: zeroize::Zeroizing<String> =
        zeroize::Zeroizing::new(s.chars().filter(|c| *c != '\r' && *c != '\n').collect());
    LENIENT.decode(cleaned.as_bytes()).ok()
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
