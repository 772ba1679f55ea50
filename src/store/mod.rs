//! Where secrets live: the `SecretStore` trait, the encrypted file store, keyrings,
//! docker/containers/Kubernetes file formats and the lookup chain over them.

pub mod docker_config;
pub mod kube;
