//! The device side of fleet updates, run by the service on every box.
//!
//! - [`agent`]: `<prefix>/cmd/ota` (`install`, `cancel`, `rollback`) through [`crate::ota`].
//! - [`model`]: model releases, `<prefix>/cmd/model`: a candidate tried in shadow, promoted or rejected
//!   ([`crate::detect::trial`]).

pub mod agent;
pub mod model;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The replies to recent command ids, oldest first: a command sent again (an MQTT redelivery, a replay, a
/// resumed rollout) gets its first answer, marked `"duplicate": true`, and is not carried out twice.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Answered(VecDeque<(String, serde_json::Value)>);

impl Answered {
    /// Ids remembered; older ones are forgotten.
    const KEEP: usize = 256;

    /// The first answer to `id`, if it was seen.
    pub fn replay(&self, id: &str) -> Option<serde_json::Value> {
        self.0.iter().find(|(seen, _)| seen == id).map(|(_, reply)| {
            let mut r = reply.clone();
            r["duplicate"] = true.into();
            r
        })
    }

    pub fn remember(&mut self, id: &str, reply: &serde_json::Value) {
        self.0.push_back((id.to_string(), reply.clone()));
        while self.0.len() > Self::KEEP {
            self.0.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_replayed_as_duplicates_and_the_oldest_forgotten() {
        let mut a = Answered::default();
        a.remember("x", &serde_json::json!({"ok": true}));
        assert_eq!(a.replay("x"), Some(serde_json::json!({"ok": true, "duplicate": true})));
        assert_eq!(a.replay("y"), None);
        for i in 0..Answered::KEEP {
            a.remember(&i.to_string(), &serde_json::json!({}));
        }
        assert_eq!(a.replay("x"), None);
        assert!(a.replay("0").is_some());
        // Stored as the plain list it always was.
        assert!(serde_json::to_value(&a).unwrap().is_array());
    }
}
