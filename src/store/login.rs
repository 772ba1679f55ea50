//! The secrets login owns: `pullsecret login` and the helper's `store` write them, logout and
//! the helper's `erase` remove only them (never a secret created or imported by name).

use super::{now_unix, Origin, Scope, SecretData, SecretStore, StoreError, StoredSecret};
use crate::secret::{RegistrySecret, SecretValue, ServerKey};

/// Stores `entry` as the login secret of its server in `namespace`, replacing the previous
/// login secret of that server; returns the secret's name. The name is the server's
/// `secret_name()`, or that plus `-login` when a created or imported secret holds it.
pub fn store_login(
    store: &dyn SecretStore,
    namespace: &str,
    entry: RegistrySecret,
) -> Result<String, StoreError> {
    let key = ServerKey::parse(&entry.server).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let derived = key.secret_name();
    let mut new = Some(StoredSecret {
        name: derived.clone(),
        namespace: namespace.to_string(),
        scope: Scope::Namespace,
        created: now_unix(),
        origin: Origin::Login,
        data: SecretData::DockerRegistry {
            server: entry.server,
            username: entry.username,
            password: SecretValue::Literal(entry.password),
            email: entry.email,
            also: Vec::new(),
        },
    });
    let mut name = derived.clone();
    store.update(namespace, &mut |secrets| {
        let Some(mut s) = new.take() else {
            return Ok(());
        };
        if let Some(i) = secrets.iter().position(|x| is_login_for(x, &key)) {
            s.name = secrets[i].name.clone();
            name = s.name.clone();
            secrets[i] = s;
            return Ok(());
        }
        let alternative = format!("{derived}-login");
        let free = [derived.clone(), alternative]
            .into_iter()
            .find(|n| !secrets.iter().any(|x| &x.name == n))
            .ok_or_else(|| StoreError::AlreadyExists {
                namespace: namespace.to_string(),
                name: derived.clone(),
            })?;
        s.name = free.clone();
        name = free;
        secrets.push(s);
        Ok(())
    })?;
    Ok(name)
}

/// Removes the login secrets of `key` from `namespace`; returns their names (empty when
/// there were none, and then nothing is written).
pub fn erase_login(
    store: &dyn SecretStore,
    namespace: &str,
    key: &ServerKey,
) -> Result<Vec<String>, StoreError> {
    let names: Vec<String> = store
        .list(Some(namespace))?
        .into_iter()
        .filter(|s| is_login_for(s, key))
        .map(|s| s.name)
        .collect();
    if names.is_empty() {
        return Ok(names);
    }
    store.update(namespace, &mut |secrets| {
        secrets.retain(|s| !is_login_for(s, key));
        Ok(())
    })?;
    Ok(names)
}

fn is_login_for(s: &StoredSecret, key: &ServerKey) -> bool {
    s.is_login()
        && s.server()
            .and_then(|server| ServerKey::parse(server).ok())
            .as_ref()
            == Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Limits;
    use crate::store::{FileStore, StorePaths};
    use secrecy::SecretString;

    fn store(dir: &std::path::Path) -> FileStore {
        FileStore::new(
            StorePaths {
                data_dir: dir.join("data"),
                key_file: dir.join("master.key"),
            },
            Limits::default(),
        )
    }

    fn secret(name: &str, server: &str, origin: Origin) -> StoredSecret {
        StoredSecret {
            name: name.into(),
            namespace: "default".into(),
            scope: Scope::Namespace,
            created: 1,
            origin,
            data: SecretData::DockerRegistry {
                server: server.into(),
                username: "u".into(),
                password: SecretValue::Literal(SecretString::from("p".to_string())),
                email: None,
                also: Vec::new(),
            },
        }
    }

    fn names(s: &FileStore) -> Vec<String> {
        let mut n: Vec<String> = s
            .list(Some("default"))
            .expect("list")
            .into_iter()
            .map(|s| s.name)
            .collect();
        n.sort();
        n
    }

    #[test]
    fn erase_keeps_created_imported_and_legacy_named_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let key = ServerKey::parse("quay.io").expect("key");
        // Written before origins existed: the login-derived name counts as login's.
        s.put(secret("quay.io", "quay.io", Origin::Unknown), false)
            .expect("put");
        s.put(secret("legacy-named", "quay.io", Origin::Unknown), false)
            .expect("put");
        s.put(secret("regcred", "https://quay.io", Origin::Created), false)
            .expect("put");
        s.put(secret("imported", "quay.io", Origin::Imported), false)
            .expect("put");
        assert_eq!(
            erase_login(&s, "default", &key).expect("erase"),
            vec!["quay.io".to_string()]
        );
        assert_eq!(names(&s), ["imported", "legacy-named", "regcred"]);
        assert!(erase_login(&s, "default", &key).expect("erase").is_empty());
    }

    #[test]
    fn login_never_replaces_a_named_secret_holding_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        s.put(secret("quay.io", "quay.io", Origin::Created), false)
            .expect("put");
        let entry = RegistrySecret::new("quay.io", "me", SecretString::from("pw".to_string()));
        assert_eq!(
            store_login(&s, "default", entry.clone()).expect("login"),
            "quay.io-login"
        );
        // A second login replaces its own secret, not the named one.
        assert_eq!(
            store_login(&s, "default", entry).expect("login"),
            "quay.io-login"
        );
        assert_eq!(names(&s), ["quay.io", "quay.io-login"]);
        let named = s.get("default", "quay.io").expect("get").expect("kept");
        assert_eq!(named.username(), Some("u"));
    }
}
