//! The secret model: registry secrets, the keys they are found under, references
//! to values held elsewhere, and the limits a stored secret must respect.

mod limits;
mod name;
mod namespace;
mod registry_secret;
mod secret_ref;
mod server_key;

pub use limits::{LimitError, Limits};
pub use name::{validate_name, NameError};
pub use namespace::{validate_namespace, SecretName, DEFAULT_NAMESPACE};
pub use registry_secret::{decode_base64, decode_basic_auth, RegistrySecret};
pub(crate) use secret_ref::run_with_timeout;
pub use secret_ref::{
    value_identity, RefError, RefResolver, SecretRef, SecretValue, StoreLookup, StoredValueError,
};
pub use server_key::{
    is_docker_hub_host, ServerKey, ServerKeyError, DOCKER_HUB_API_HOST, DOCKER_HUB_DOMAIN,
    DOCKER_HUB_HOSTS, DOCKER_HUB_KEY, LEGACY_HUB_DOMAIN,
};
