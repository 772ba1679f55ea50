//! The freedesktop Secret Service (gnome-keyring, KeePassXC, KWallet) over D-Bus: one item per
//! secret with attributes `service=pullsecret`, `namespace`, `name`; and docker's own items, for import.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use secrecy::SecretString;
use secret_service::blocking::{Item, SecretService as Service};
use secret_service::{EncryptionType, Error as SsError};
use zeroize::Zeroizing;

use super::{Backend, Bytes};
use crate::secret::RegistrySecret;
use crate::store::StoreError;

const BACKEND: &str = "secret-service";
const BUS_NAME: &str = "org.freedesktop.secrets";
const SERVICE: &str = "pullsecret";
const SCHEMA: &str = "io.github.pullsecret.Secret";
/// How long an explicitly configured Secret Service may take to answer: long enough for
/// D-Bus to activate a keyring daemon, short enough that a hung bus is reported.
pub const EXPLICIT_TIMEOUT: Duration = Duration::from_secs(10);

const NO_BUS_FIX: &str = "run inside a session bus with an unlocked keyring: dbus-run-session -- sh -c 'echo -n PASSWORD | gnome-keyring-daemon --unlock; exec YOUR_COMMAND', or set store = \"file\"";
const NOT_PROVIDED_FIX: &str = "start a Secret Service on this bus: echo -n PASSWORD | gnome-keyring-daemon --unlock --components=secrets (apt-get install gnome-keyring), or set store = \"file\"";
const UNLOCK_FIX: &str = "unlock it: echo -n PASSWORD | gnome-keyring-daemon --replace --unlock (or in the desktop's keyring app), or set store = \"file\"";

/// A session with the Secret Service.
///
/// The session uses the `plain` algorithm: the bytes cross only the local session bus,
/// whose socket is private to the uid, and the `dh-ietf1024` exchange that
/// zbus-secret-service-keyring-store always negotiates costs a 1024-bit modular
/// exponentiation per process, which measured at twice the time of a whole `get`.
pub struct SecretService {
    ss: Service<'static>,
}

/// Why the Secret Service cannot be used, and what fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAvailable {
    pub reason: String,
    pub fix: &'static str,
}

impl From<NotAvailable> for StoreError {
    fn from(n: NotAvailable) -> Self {
        StoreError::Unavailable {
            backend: BACKEND,
            reason: n.reason,
            fix: n.fix.to_string(),
        }
    }
}

impl SecretService {
    /// Connects for an explicitly configured `secret-service`: D-Bus may activate the
    /// keyring daemon, and any failure is an error naming the cause.
    pub fn connect() -> Result<Self, StoreError> {
        Ok(Self::open(EXPLICIT_TIMEOUT, true)?)
    }

    /// Connects for `auto`: only when `DBUS_SESSION_BUS_ADDRESS` is set and a Secret Service
    /// already owns its bus name (activating one could start a locked, prompt-less daemon)
    /// and all of it answers within `deadline`.
    pub fn probe(deadline: Duration) -> Result<Self, NotAvailable> {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none_or(|v| v.is_empty()) {
            return Err(NotAvailable {
                reason: "no D-Bus session (DBUS_SESSION_BUS_ADDRESS is unset)".into(),
                fix: NO_BUS_FIX,
            });
        }
        Self::open(deadline, false)
    }

    fn open(deadline: Duration, activate: bool) -> Result<Self, NotAvailable> {
        let address = std::env::var("DBUS_SESSION_BUS_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty());
        if address.is_none() {
            // zbus falls back to the systemd user bus socket; without one there is no bus.
            let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty());
            if !runtime.is_some_and(|r| std::path::Path::new(&r).join("bus").exists()) {
                return Err(NotAvailable {
                    reason: "no D-Bus session (DBUS_SESSION_BUS_ADDRESS is unset and there is no $XDG_RUNTIME_DIR/bus)".into(),
                    fix: NO_BUS_FIX,
                });
            }
        }
        // The whole setup runs on a thread so a bus that accepts but never answers costs
        // at most `deadline`; an abandoned thread ends with the process.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(open_session(deadline, activate));
        });
        match rx.recv_timeout(deadline) {
            Ok(r) => r.map(|ss| Self { ss }),
            Err(_) => Err(NotAvailable {
                reason: format!(
                    "the D-Bus session bus{} did not answer within {} ms",
                    address.map(|a| format!(" at {a}")).unwrap_or_default(),
                    deadline.as_millis()
                ),
                fix: NO_BUS_FIX,
            }),
        }
    }

    /// Every credential docker-credential-secretservice stored (schema `io.docker.Credentials`:
    /// attributes `server`, `username`, `docker_cli`; the secret is the password).
    pub fn docker_credentials(&self) -> Result<Vec<RegistrySecret>, StoreError> {
        let mut out = Vec::new();
        for item in &self.search(HashMap::from([("docker_cli", "1")]))? {
            let attrs = item.get_attributes().map_err(op_error)?;
            let (Some(server), Some(username)) = (attrs.get("server"), attrs.get("username"))
            else {
                continue;
            };
            let secret = Zeroizing::new(item.get_secret().map_err(op_error)?);
            let password = String::from_utf8(secret.to_vec()).map_err(|_| {
                StoreError::Invalid(format!(
                    "{BACKEND}: docker's entry for {server:?} holds a password that is not UTF-8"
                ))
            })?;
            out.push(RegistrySecret::new(
                server.clone(),
                username.clone(),
                SecretString::from(password),
            ));
        }
        out.sort_by(|a, b| a.server.cmp(&b.server));
        Ok(out)
    }

    /// Locked items are unlocked through the service's prompt only where a desktop can
    /// show it; headless, a prompt would wait forever, so the caller gets the fix instead.
    fn unlock(&self, locked: &[Item<'_>]) -> Result<(), StoreError> {
        if locked.is_empty() {
            return Ok(());
        }
        if has_display() {
            let refs: Vec<&Item<'_>> = locked.iter().collect();
            return self.ss.unlock_all(&refs).map_err(op_error);
        }
        Err(locked_error())
    }

    fn search(&self, attrs: HashMap<&str, &str>) -> Result<Vec<Item<'_>>, StoreError> {
        let found = self.ss.search_items(attrs).map_err(op_error)?;
        if !found.locked.is_empty() {
            self.unlock(&found.locked)?;
            let mut all = found.unlocked;
            all.extend(found.locked);
            return Ok(all);
        }
        Ok(found.unlocked)
    }
}

fn open_session(timeout: Duration, activate: bool) -> Result<Service<'static>, NotAvailable> {
    let unreachable = |e: zbus::Error| NotAvailable {
        reason: format!("cannot connect to the D-Bus session bus: {e}"),
        fix: NO_BUS_FIX,
    };
    let conn = zbus::blocking::connection::Builder::session()
        .and_then(|b| b.method_timeout(timeout).build())
        .map_err(unreachable)?;
    let ask = |method: &str, body: &dyn Fn() -> Result<zbus::Message, zbus::Error>| {
        body().map_err(|e| NotAvailable {
            reason: format!("the D-Bus daemon did not answer {method}: {e}"),
            fix: NO_BUS_FIX,
        })
    };
    let owned: bool = ask("NameHasOwner", &|| {
        conn.call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "NameHasOwner",
            &(BUS_NAME,),
        )
    })?
    .body()
    .deserialize()
    .unwrap_or(false);
    if !owned {
        let not_running = || NotAvailable {
            reason: format!("{BUS_NAME} is not running on the session bus"),
            fix: NOT_PROVIDED_FIX,
        };
        if !activate {
            return Err(not_running());
        }
        let names: Vec<String> = ask("ListActivatableNames", &|| {
            conn.call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "ListActivatableNames",
                &(),
            )
        })?
        .body()
        .deserialize()
        .unwrap_or_default();
        if !names.iter().any(|n| n == BUS_NAME) {
            return Err(NotAvailable {
                reason: format!("no Secret Service: {BUS_NAME} is not running and was not provided by any .service files"),
                fix: NOT_PROVIDED_FIX,
            });
        }
    }
    Service::connect_with_existing(EncryptionType::Plain, conn).map_err(|e| match op_error(e) {
        StoreError::Unavailable { reason, .. } => NotAvailable {
            reason,
            fix: NOT_PROVIDED_FIX,
        },
        other => NotAvailable {
            reason: other.to_string(),
            fix: NOT_PROVIDED_FIX,
        },
    })
}

fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

fn locked_error() -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        reason: "the keyring collection is locked".into(),
        fix: UNLOCK_FIX.into(),
    }
}

/// Maps a failed call. Secret Service errors carry D-Bus error names and messages, never
/// the secret bytes.
fn op_error(e: SsError) -> StoreError {
    let unavailable = |reason: String, fix: &str| StoreError::Unavailable {
        backend: BACKEND,
        reason,
        fix: fix.into(),
    };
    match e {
        SsError::Locked => locked_error(),
        SsError::Prompt | SsError::PromptDisconnected => {
            unavailable("the unlock prompt was dismissed".into(), UNLOCK_FIX)
        }
        SsError::NoResult => unavailable(
            "the Secret Service has no default collection (login keyring)".into(),
            UNLOCK_FIX,
        ),
        SsError::Unavailable => unavailable(
            "no Secret Service provider or D-Bus session found".into(),
            NOT_PROVIDED_FIX,
        ),
        SsError::Zbus(zbus::Error::MethodError(name, msg, _)) => {
            let text = format!(
                "{name}{}",
                msg.map(|m| format!(": {m}")).unwrap_or_default()
            );
            match name.as_str() {
                "org.freedesktop.Secret.Error.IsLocked" => locked_error(),
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner" => unavailable(
                    format!("{BUS_NAME} was not provided ({text})"),
                    NOT_PROVIDED_FIX,
                ),
                _ => StoreError::Invalid(format!("{BACKEND}: {text}")),
            }
        }
        other => StoreError::Invalid(format!("{BACKEND}: {other}")),
    }
}

/// The encrypted file store's master key, one item per data directory. Its own schema keeps it
/// out of secret listings.
const MASTER_SCHEMA: &str = "io.github.pullsecret.MasterKey";

impl SecretService {
    pub fn read_master_key(&self, data_dir: &str) -> Result<Option<Bytes>, StoreError> {
        let a = HashMap::from([
            ("service", SERVICE),
            ("xdg:schema", MASTER_SCHEMA),
            ("data-dir", data_dir),
        ]);
        match self.search(a)?.first() {
            Some(item) => Ok(Some(Zeroizing::new(item.get_secret().map_err(op_error)?))),
            None => Ok(None),
        }
    }

    pub fn write_master_key(&self, data_dir: &str, value: &[u8]) -> Result<(), StoreError> {
        let collection = self.ss.get_default_collection().map_err(op_error)?;
        if collection.is_locked().map_err(op_error)? {
            return Err(locked_error());
        }
        let a = HashMap::from([
            ("service", SERVICE),
            ("xdg:schema", MASTER_SCHEMA),
            ("data-dir", data_dir),
        ]);
        collection
            .create_item(
                &format!("pullsecret master key for {data_dir}"),
                a,
                value,
                true,
                "text/plain",
            )
            .map_err(op_error)?;
        Ok(())
    }
}

fn attrs<'a>(namespace: Option<&'a str>, name: Option<&'a str>) -> HashMap<&'a str, &'a str> {
    // The schema attribute keeps other programs' `service=pullsecret` items (keyring-rs
    // uses `service` too) out of our searches.
    let mut a = HashMap::from([("service", SERVICE), ("xdg:schema", SCHEMA)]);
    if let Some(ns) = namespace {
        a.insert("namespace", ns);
    }
    if let Some(n) = name {
        a.insert("name", n);
    }
    a
}

/// Item paths end in a per-collection counter; ordering by it lists secrets in the order
/// they were first stored.
fn creation_order(a: &Item<'_>, b: &Item<'_>) -> std::cmp::Ordering {
    let (a, b) = (a.item_path.as_str(), b.item_path.as_str());
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Backend for SecretService {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn load(&self, namespace: Option<&str>) -> Result<Vec<Bytes>, StoreError> {
        let mut items = self.search(attrs(namespace, None))?;
        items.sort_by(creation_order);
        items
            .iter()
            .map(|i| i.get_secret().map(Zeroizing::new).map_err(op_error))
            .collect()
    }

    fn write(&self, namespace: &str, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let collection = self.ss.get_default_collection().map_err(op_error)?;
        if collection.is_locked().map_err(op_error)? {
            if !has_display() {
                return Err(locked_error());
            }
            collection.unlock().map_err(op_error)?;
        }
        let a = attrs(Some(namespace), Some(name));
        let label = format!("pullsecret {namespace}/{name}");
        // `replace` updates the item with these exact attributes in place.
        collection
            .create_item(&label, a, value, true, "application/json")
            .map_err(op_error)?;
        Ok(())
    }

    fn remove(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        for item in self.search(attrs(Some(namespace), Some(name)))? {
            item.delete().map_err(op_error)?;
        }
        Ok(())
    }
}
