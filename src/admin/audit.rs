//! The audit trail: one line per change made through the admin API (time, token, action,
//! namespace, object; never a value), logged and kept in memory for `/api/v1/audit`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use super::tokens::AdminIdentity;

const KEEP: usize = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub time: String,
    pub token: String,
    pub action: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Default)]
pub struct Audit {
    entries: Mutex<VecDeque<AuditEntry>>,
}

impl Audit {
    pub fn record(&self, who: &AdminIdentity, action: &str, namespace: &str, name: &str) {
        let entry = AuditEntry {
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            token: who.name.clone(),
            action: action.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        tracing::info!(
            target: "pullsecret::audit",
            token = %entry.token,
            action = %entry.action,
            namespace = %entry.namespace,
            name = %entry.name,
            "audit"
        );
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= KEEP {
            e.pop_front();
        }
        e.push_back(entry);
    }

    /// Newest first; only `namespace`'s entries for a namespace token.
    pub fn entries(&self, namespace: Option<&str>) -> Vec<AuditEntry> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.iter()
            .rev()
            .filter(|x| namespace.is_none_or(|ns| x.namespace == ns))
            .cloned()
            .collect()
    }
}
