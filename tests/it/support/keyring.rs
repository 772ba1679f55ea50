//! A gnome-keyring Secret Service on a private D-Bus session bus started under
//! `dbus-run-session`.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::time::Duration;

use super::{eventually, require_bin, run_with_stdin, stderr};

/// A D-Bus session bus from `dbus-run-session` with an unlocked gnome-keyring on it.
pub struct Keyring {
    session: Child,
    pub bus: String,
}

impl Keyring {
    /// `home` holds the keyring files, so tests never touch the user's keyrings.
    pub fn start(home: &Path) -> Option<Self> {
        require_bin("dbus-run-session", "apt-get install dbus")?;
        require_bin("gnome-keyring-daemon", "apt-get install gnome-keyring")?;
        // The session lives as long as `cat` waits on our pipe.
        let mut session = Command::new("dbus-run-session")
            .args([
                "--",
                "sh",
                "-c",
                "echo \"$DBUS_SESSION_BUS_ADDRESS\"; exec cat",
            ])
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-run-session");
        let mut line = String::new();
        {
            use std::io::BufRead;
            let out = session.stdout.as_mut().expect("stdout");
            std::io::BufReader::new(out)
                .read_line(&mut line)
                .expect("bus address");
        }
        let bus = line.trim().to_string();
        assert!(!bus.is_empty(), "dbus-run-session printed no address");
        let unlock = run_with_stdin(
            {
                let mut c = Command::new("gnome-keyring-daemon");
                c.args(["--unlock", "--components=secrets"])
                    .env("DBUS_SESSION_BUS_ADDRESS", &bus)
                    .env("HOME", home)
                    .env("XDG_DATA_HOME", home.join(".local/share"));
                c
            },
            b"test-keyring-password",
        );
        assert!(
            unlock.status.success(),
            "gnome-keyring-daemon --unlock failed: {}",
            stderr(&unlock)
        );
        // The daemon forks; until it owns the bus name, a client would D-Bus-activate a
        // second daemon that races the first over the new keyring file.
        let owned = || {
            Command::new("dbus-send")
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                ])
                .args([
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .env("DBUS_SESSION_BUS_ADDRESS", &bus)
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
        };
        eventually(
            Duration::from_secs(10),
            "gnome-keyring to own org.freedesktop.secrets",
            owned,
        );
        Some(Self { session, bus })
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        drop(self.session.stdin.take());
        let _ = self.session.kill();
        let _ = self.session.wait();
    }
}
