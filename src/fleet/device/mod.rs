//! The device side of fleet updates, run by the service on every box.
//!
//! - [`agent`]: `<prefix>/cmd/ota` (`install`, `cancel`, `rollback`) through [`crate::ota`].
//! - [`model`]: model releases, `<prefix>/cmd/model`: a candidate tried in shadow, promoted or rejected
//!   ([`crate::detect::trial`]).

pub mod agent;
pub mod model;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// A fleet `install` (`…/cmd/ota` and `…/cmd/model`): where the bundle is, the SHA-256 the file must have
/// and the release it must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    #[serde(default)]
    pub id: Option<String>,
    pub url: String,
    pub bundle_sha256: String,
    pub version: String,
    /// `…/cmd/ota` only: boot the new release once installed (the default), or only stage it for the next
    /// boot (`false`). A model release needs no reboot and refuses the field.
    #[serde(default)]
    pub reboot: Option<bool>,
}

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
    use super::agent::OtaCommand;
    use super::model::ModelCommand;
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

    fn ota(v: serde_json::Value) -> Result<OtaCommand, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn both_commands_read_one_install_and_refuse_unknown_fields() {
        let base = serde_json::json!({"op":"install","id":"r1","url":"http://u/b","bundle_sha256":"ab","version":"2.0.0"});
        match ota(base.clone()).unwrap() {
            OtaCommand::Install(i) => assert_eq!((i.id.as_deref(), i.version.as_str(), i.reboot), (Some("r1"), "2.0.0", None)),
            other => panic!("{other:?}"),
        }
        let mut staged = base.clone();
        staged["reboot"] = false.into();
        assert!(matches!(ota(staged).unwrap(), OtaCommand::Install(Install { reboot: Some(false), .. })));
        let mut typo = base.clone();
        typo["rebot"] = false.into();
        assert!(ota(typo).unwrap_err().contains("rebot"));
        let model: ModelCommand = serde_json::from_value(base).unwrap();
        assert!(matches!(model, ModelCommand::Install(Install { reboot: None, .. })));
    }
}
